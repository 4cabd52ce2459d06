"""Fetch the dataset's raw files from its mirrors: `python scripts/download.py dataset=fashion_mnist`."""

from fwbench.cli import run_app
from fwbench.data.steps import download_step

if __name__ == "__main__":
    run_app(download_step)
