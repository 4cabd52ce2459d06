"""Parse, scale and split the dataset into the arrays both frameworks read."""

from fwbench.cli import run_app
from fwbench.data.steps import preprocess_step

if __name__ == "__main__":
    run_app(preprocess_step)
