"""scripts/compare_reports.py on two crafted claims tables whose differences are known."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import PROJECT_ROOT
from fwbench.errors import DataError
from fwbench.reporting.compare import compare_tables, intervals_disjoint, read_claims

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
