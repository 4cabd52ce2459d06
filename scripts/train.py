"""Train one framework x model x seed: `python scripts/train.py framework=torch model=lenet seed=3`."""

from fwbench.cli import run_app
from fwbench.training.run import train_variant

if __name__ == "__main__":
    run_app(train_variant)
