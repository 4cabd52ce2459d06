"""The report: structure on constructed results, and the rendered page in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from browser import check_report_page
from conftest import PROJECT_ROOT
from fwbench.reporting.build import FRAMEWORK_NAMES

COMMITTED_REPORTS = sorted((PROJECT_ROOT / "reports").glob("*/comparison.html"))


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_renders_in_chromium(html_path):
    check_report_page(html_path, f"{html_path.parent.name}.png")


FRAMEWORK_KEYS = {name: key for key, name in FRAMEWORK_NAMES.items()}  # as the report prints them
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def markdown_table(markdown: str, section: str) -> list[dict[str, str]]:
    """The first table under `## <section>`, one dict per row keyed by the header cells."""
    lines = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[2:]]


def leading_number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_numbers_trace_to_results_and_runs(html_path):
    """Accuracy means, throughput and memory medians recomputed from results.csv beside the
    report match the printed numbers, and every row of results.csv names its MLflow run."""
    markdown = (html_path.parent / "comparison.md").read_text()
    results = pd.read_csv(html_path.parent / "results.csv", dtype={"mlflow_run_id": str})
    assert results["mlflow_run_id"].fillna("").str.match(RUN_ID).all()
    results["value"] = pd.to_numeric(results["value"], errors="coerce")  # a few are text (CUDA version "")

    accuracy = results[(results.source == "evaluate") & (results.metric == "test_accuracy")]
    for row in markdown_table(markdown, "Accuracy"):
        values = accuracy[(accuracy.model == row["model"]) & (accuracy.framework == FRAMEWORK_KEYS[row["framework"]])]
        assert len(values) == int(row["seeds"])
        assert leading_number(row["test accuracy %, mean ± 95 % CI"]) == pytest.approx(100 * values.value.mean(), abs=0.005)

    bench = results[results.source == "bench"]
    for section, metric, column, digits in (
        ("Training throughput by mode", "train_samples_per_s", "samples/s, median [IQR]", 0.5),
        ("Peak memory", "peak_memory_mb", "peak memory MB, median [IQR]", 0.05),
    ):
        rows = markdown_table(markdown, section)
        assert rows, section
        for row in rows:
            values = bench[(bench.model == row["model"]) & (bench.framework == FRAMEWORK_KEYS[row["framework"]])
                           & (bench["mode"] == row["mode"]) & (bench.metric == metric)]
            assert len(values) == int(row["trials"]), (section, row)
            assert leading_number(row[column]) == pytest.approx(values.value.median(), abs=digits), (section, row)


def test_throughput_table_shows_each_jobs_cv_and_windows_timed(tmp_path):
    """The trials' CV and the windows a job needed come from the rows; the text states the rule."""
    from fwbench.reporting.build import bench_sections
    from fwbench.reporting.tables import with_claim_columns

    rows = []
    for framework, mode, rates, windows in (("tf", "graph", [100, 102, 98, 101, 99], 7),
                                            ("torch", "eager", [100, 120, 80, 110, 90], 15)):
        for trial, rate in enumerate(rates):
            rows.append({"framework": framework, "model": "convnet", "mode": mode, "trial": trial, "trials": 5,
                         "device": "cpu", "train_samples_per_s": rate, "first_step_s": 1.0,
                         "infer_latency_p50_ms": 1.0, "infer_latency_p95_ms": 1.0, "infer_latency_p99_ms": 1.0,
                         "infer_samples_per_s": 1.0, "peak_rss_train_mb": 1.0, "steady_cv": 0.05,
                         "windows_timed": windows})
    bench = with_claim_columns(pd.DataFrame(rows))
    section = bench_sections(bench, tmp_path)[0]
    assert section.anchor == "throughput"
    table = section.tables[0]
    assert table.header[-2:] == ["CV %", "windows timed"]
    expected_cv = [100 * pd.Series(r).std() / pd.Series(r).mean() for r in ([100, 102, 98, 101, 99],
                                                                             [100, 120, 80, 110, 90])]
    assert [float(row[-2]) for row in table.rows] == pytest.approx(expected_cv, abs=0.05)
    assert [row[-1] for row in table.rows] == ["7", "15"]
    assert "last 5 had a throughput CV of at most 5 %" in section.paragraphs[1]
