"""The Snakemake DAG: job counts, lint, and the smoke experiment end to end."""

from __future__ import annotations

import re

import pytest
import yaml
from snakemake.settings.types import MaxJobsPerTimespan

from browser import check_report_page
from conftest import PROJECT_ROOT, redirected_paths, run_snakemake

FRAMEWORK_NAMES = ("TensorFlow", "PyTorch")
MODELS = ("linear", "mlp", "lenet", "convnet")


def job_counts(dry_run_output: str) -> dict[str, int]:
    table = dry_run_output.split("Job stats:", 1)[1]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_default_dry_run_lists_the_whole_grid(tmp_path):
    overrides = " ".join(redirected_paths(tmp_path))
    result = run_snakemake("-n", "--config", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["download"] == 4  # one job per IDX file of Fashion-MNIST
    # Fashion-MNIST, and synthetic arrays of CIFAR-10's and IMDB's shapes for the two large models.
    assert counts["preprocess"] == 3
    assert counts["train"] == 24  # 4 models x 2 arms (tf, torch) x 3 seeds
    assert counts["evaluate"] == 24
    # Four arms benched: 4 models x 9 modes (tf 3, tf_native 3, torch 2, jax 1) x 3 replicates, and a
    # fourth process of each arm's A/A control variant; resnet18 and transformer in tf:graph and
    # torch:eager x 3 replicates.
    assert counts["bench"] == 112 + 12
    bench_arms = set(re.findall(r"^\s+wildcards: framework=(\w+), model=\w+, mode=", result.stdout, flags=re.M))
    assert bench_arms == {"tf", "tf_native", "torch", "jax"}
    large = set(re.findall(r"^\s+wildcards: framework=(\w+), model=(?:resnet18|transformer), mode=(\w+)",
                           result.stdout, flags=re.M))
    assert large == {("tf", "graph"), ("torch", "eager")}
    assert re.search(r"output: \S+/data/cifar10/synthetic/manifest.json", result.stdout)
    assert counts["report"] == 1


def test_lint_is_clean():
    result = run_snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_default_profile_keeps_snakemake_from_rescheduling_every_second():
    """Each job that finishes while others wait leaves Snakemake re-running its scheduler
    every <timespan>; at Snakemake's 1 s that took 3 % of the machine beside the bench jobs."""
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "default" / "config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    assert limit.timespan >= 5
    assert limit.max_jobs / limit.timespan >= 100  # Snakemake's default rate, not a lower one


@pytest.mark.slow
def test_smoke_experiment_end_to_end(tmp_path):
    overrides = " ".join(redirected_paths(tmp_path))
    result = run_snakemake("--cores", "2", "--config", "experiment=smoke", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    report = (tmp_path / "reports" / "smoke" / "comparison.md").read_text()
    html = (tmp_path / "reports" / "smoke" / "comparison.html").read_text()
    for model in MODELS:
        for framework in FRAMEWORK_NAMES:
            assert re.search(rf"^\| {model} \| {framework} \|", report, flags=re.M), (model, framework)
            assert f"<td>{model}</td><td>{framework}</td>" in html
    check_report_page(tmp_path / "reports" / "smoke" / "comparison.html", "smoke-report.png")

    # Snakemake's own report of the same run holds the figures marked with report(...).
    snakemake_report = tmp_path / "snakemake-report.html"
    result = run_snakemake("--report", str(snakemake_report), "--config", "experiment=smoke",
                           f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "accuracy.png" in snakemake_report.read_text()
