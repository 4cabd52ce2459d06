"""scripts/compare_reports.py on two crafted claims tables whose differences are known."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import PROJECT_ROOT
from fwbench.errors import DataError
from fwbench.reporting.compare import compare_tables, describe, intervals_disjoint, read_claims, speed_shift

COLUMNS = ["claim", "label", "metric", "estimate", "ci_low", "ci_high", "verdict", "n_a", "n_b"]


def claims_table(rows) -> pd.DataFrame:
    return pd.DataFrame([[*row, 3, 3] for row in rows], columns=COLUMNS)


RUN_A = claims_table([
    ("1", "cpu | convnet | tf:graph vs torch:eager", "train_samples_per_s", 1.3, 1.2, 1.4, "supported"),
    ("1", "cpu | linear | tf:graph vs torch:eager", "train_samples_per_s", 0.5, 0.45, 0.55, "contradicted"),
    ("3", "cpu | mlp | tf:graph vs torch:eager", "peak_memory_mb", 1.0, 0.98, 1.02, "no meaningful difference"),
    ("3", "cpu | lenet | tf:graph vs torch:eager", "peak_memory_mb", 0.8, 0.7, 0.9, "supported"),
    ("6", "any | mlp | tf vs torch", "test_accuracy", 0.0, float("nan"), float("nan"), "inconclusive"),
    ("2", "cpu | mlp | torch:compile vs torch:eager", "train_samples_per_s", 1.1, 1.08, 1.12, "supported"),
])
RUN_B = claims_table([
    ("1", "cpu | convnet | tf:graph vs torch:eager", "train_samples_per_s", 1.25, 1.1, 1.35, "supported"),
    # flipped, with disjoint intervals
    ("1", "cpu | linear | tf:graph vs torch:eager", "train_samples_per_s", 1.5, 1.4, 1.6, "supported"),
    # changed to inconclusive, intervals overlap
    ("3", "cpu | mlp | tf:graph vs torch:eager", "peak_memory_mb", 1.03, 0.97, 1.09, "inconclusive"),
    ("3", "cpu | lenet | tf:graph vs torch:eager", "peak_memory_mb", 0.8, 0.72, 0.88, "supported"),
    ("6", "any | mlp | tf vs torch", "test_accuracy", 0.0, float("nan"), float("nan"), "inconclusive"),
    # same verdict, but the intervals do not overlap
    ("2", "cpu | mlp | torch:compile vs torch:eager", "train_samples_per_s", 1.3, 1.25, 1.35, "supported"),
    ("5", "any | mlp | load_time_s", "load_time_s", 1.0, 0.9, 1.1, "inconclusive"),
])


def test_changed_verdicts_flips_and_disjoint_intervals_are_counted():
    comparison = compare_tables(RUN_A, RUN_B)
    assert len(comparison.matched) == 6
    assert sorted(comparison.changed["label"]) == ["cpu | linear | tf:graph vs torch:eager",
                                                   "cpu | mlp | tf:graph vs torch:eager"]
    assert list(comparison.flips["label"]) == ["cpu | linear | tf:graph vs torch:eager"]
    assert sorted(comparison.disjoint["label"]) == ["cpu | linear | tf:graph vs torch:eager",
                                                    "cpu | mlp | torch:compile vs torch:eager"]
    assert comparison.only_a == [] and comparison.only_b == ["5 | any | mlp | load_time_s | load_time_s"]


def test_undefined_intervals_are_never_disjoint():
    assert intervals_disjoint(1.0, 2.0, 3.0, 4.0)
    assert not intervals_disjoint(1.0, 2.0, 2.0, 4.0)  # touching shares a point
    assert not intervals_disjoint(float("nan"), float("nan"), 3.0, 4.0)


def test_the_script_prints_the_counts_and_each_changed_condition(tmp_path):
    (tmp_path / "a").mkdir()
    RUN_A.to_csv(tmp_path / "a" / "claims.csv", index=False)
    RUN_B.to_csv(tmp_path / "b.csv", index=False)
    result = subprocess.run([sys.executable, "scripts/compare_reports.py", str(tmp_path / "a"), str(tmp_path / "b.csv")],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "conditions in both: 6" in out
    assert "same verdict: 4 (66.7 %)" in out
    assert "supported <-> contradicted flips: 1" in out
    assert "intervals that do not overlap: 2 (33.3 %)" in out
    assert "claim 1 | cpu | linear | tf:graph vs torch:eager | train_samples_per_s: 0.5 [0.45, 0.55] contradicted " \
           "-> 1.5 [1.4, 1.6] supported  [FLIP, intervals disjoint]" in out
    assert "only in B: 5 | any | mlp | load_time_s | load_time_s" in out


def test_a_directory_without_claims_is_one_line(tmp_path):
    with pytest.raises(DataError, match="accepted are a report directory holding claims.csv"):
        read_claims(tmp_path)
    result = subprocess.run([sys.executable, "scripts/compare_reports.py", str(tmp_path), str(tmp_path)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_table_with_a_condition_twice_is_refused(tmp_path):
    pd.concat([RUN_A, RUN_A.iloc[:1]]).to_csv(tmp_path / "claims.csv", index=False)
    with pytest.raises(DataError, match="twice"):
        read_claims(tmp_path)


def test_a_comparison_that_several_claims_judge_is_one_distinct_measurement():
    shared = ("cpu | convnet | tf:graph vs torch:eager", "train_samples_per_s")
    a = claims_table([("1", *shared, 1.3, 1.2, 1.4, "supported"), ("2", *shared, 1.3, 1.2, 1.4, "supported")])
    b = claims_table([("1", *shared, 2.0, 1.8, 2.2, "supported"), ("2", *shared, 2.0, 1.8, 2.2, "supported")])
    comparison = compare_tables(a, b)
    assert len(comparison.matched) == 2 and len(comparison.disjoint) == 2
    assert len(comparison.distinct) == 1 and comparison.distinct["disjoint"].sum() == 1
    text = describe(comparison, "a", "b")
    assert "distinct measurements (a comparison judged by several claims counted once): 1; same verdict 1 " \
           "(100.0 %), flips 0, intervals that do not overlap 1 (100.0 %)" in text


def bench_results(speeds: dict[tuple[str, str, str], list[float]]) -> pd.DataFrame:
    """results.csv bench rows: per variant, one process per listed throughput (two windows each)."""
    rows = []
    for (framework, model, mode), processes in speeds.items():
        for replicate, speed in enumerate(processes):
            for window, value in enumerate((0.9 * speed, 1.1 * speed)):
                rows.append({"source": "bench", "framework": framework, "model": model, "mode": mode,
                             "replicate": replicate, "window": window, "metric": "train_samples_per_s",
                             "value": value})
            rows.append({"source": "bench", "framework": framework, "model": model, "mode": mode,
                         "replicate": replicate, "window": 0, "metric": "peak_memory_mb", "value": 100.0})
    return pd.DataFrame(rows)


def test_speed_shift_is_each_variants_median_process_throughput_in_b_over_a(tmp_path):
    for name, scale in (("a", 1.0), ("b", 0.5)):
        (tmp_path / name).mkdir()
        RUN_A.to_csv(tmp_path / name / "claims.csv", index=False)
        bench_results({("tf", "mlp", "graph"): [100 * scale, 120 * scale, 400 * scale],
                       ("torch", "mlp", "eager"): [50, 60, 70]}).to_csv(tmp_path / name / "results.csv", index=False)
    shift = speed_shift(tmp_path / "a", tmp_path / "b")
    # Medians of the process means: tf 120 -> 60 (0.5), torch 60 -> 60 (1.0).
    assert (shift.variants, shift.low, shift.high, shift.median) == (2, 0.5, 1.0, 0.75)
    text = describe(compare_tables(RUN_A, RUN_A), "a", "b", shift)
    assert "bench throughput B / A over 2 variants: median 0.75 (range 0.50 to 1.00)" in text
    assert "the machine ran at another speed in one of the runs" in text
    steady = describe(compare_tables(RUN_A, RUN_A), "a", "a", speed_shift(tmp_path / "a", tmp_path / "a"))
    assert "median 1.00" in steady and "another speed" not in steady
    # Claims tables alone (no results.csv beside them): nothing to say about the machine.
    assert speed_shift(tmp_path / "a" / "claims.csv", tmp_path / "b" / "claims.csv") is None
