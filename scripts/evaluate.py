"""Evaluate one trained model on the test set: `python scripts/evaluate.py framework=tf model=mlp seed=0`."""

from fwbench.cli import run_app
from fwbench.evaluation import evaluate_variant

if __name__ == "__main__":
    run_app(evaluate_variant)
