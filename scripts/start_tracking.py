"""Create the MLflow store, the experiment and the pipeline's parent run: `python scripts/start_tracking.py experiment=smoke`."""

from fwbench.cli import run_app
from fwbench.tracking.runs import start_pipeline_run

if __name__ == "__main__":
    run_app(start_pipeline_run)
