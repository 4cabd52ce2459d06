"""Render reports/<experiment>/comparison.html and .md from the pipeline's result files."""

from fwbench.cli import default_config_dir, run_app
from fwbench.bench.outputs import results_path as bench_results_path
from fwbench.reporting.build import build_report


def report_step(cfg):
    return build_report(cfg, default_config_dir(), bench_results_path(cfg))


if __name__ == "__main__":
    run_app(report_step)
