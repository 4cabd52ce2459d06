"""Render reports/<experiment>/comparison.html and .md from the pipeline's result files."""

from fwbench.cli import run_app
from fwbench.report import report_step

if __name__ == "__main__":
    run_app(report_step)
