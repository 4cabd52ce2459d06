"""Sweeps: the bench at several batch sizes and thread counts, and how the verdicts move with them.

A setting is a (batch size, threads) pair (fwbench.bench.grid). The claims are
judged at every setting on that setting's processes alone, exactly as the
report judges them at its reference setting (fwbench.claims), and each
condition's verdicts are then read along the batch sizes at each thread
count and along the thread counts at each batch size: a change of verdict
between neighbouring settings is a crossover, which the report names.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fwbench import claims as claim_catalogue
from fwbench import stats
from fwbench.bench.outputs import SETTING_COLUMNS
from fwbench.bench.table import process_means

BATCH, THREADS = SETTING_COLUMNS
# How a setting's axis reads in a sentence.
AXIS_WORDS = {BATCH: ("batch", "batch sizes"), THREADS: ("threads", "thread counts")}


def other_axis(axis: str) -> str:
    return THREADS if axis == BATCH else BATCH


def settings_in(bench: pd.DataFrame | None) -> list[tuple[int, int]]:
    """The (batch size, threads) settings of a bench table, sorted; none for no table."""
    if bench is None or bench.empty:
        return []
    pairs = bench[list(SETTING_COLUMNS)].drop_duplicates().itertuples(index=False)
    return sorted((int(batch), int(threads)) for batch, threads in pairs)


def is_sweep(bench: pd.DataFrame | None) -> bool:
    return len(settings_in(bench)) > 1


def at_setting(bench: pd.DataFrame | None, batch_size: int, threads: int) -> pd.DataFrame | None:
    """The rows of one setting (None for no table)."""
    if bench is None:
        return None
    return bench[(bench[BATCH] == batch_size) & (bench[THREADS] == threads)]


@dataclass(frozen=True)
class SettingVerdict:
    """One condition of one claim at one setting: the claim's own result row (fwbench.claims)."""

    batch_size: int
    threads: int
    row: claim_catalogue.ConditionResult

    @property
    def estimate(self) -> float:
        return self.row.estimate

    @property
    def verdict(self) -> str:
        return self.row.verdict

    def value(self, axis: str) -> int:
        return self.batch_size if axis == BATCH else self.threads


@dataclass(frozen=True)
class ConditionSweep:
    """One condition of one claim (claim, condition label, metric) across every setting it was judged at."""

    claim_id: str
    label: str
    metric: str
    points: tuple[SettingVerdict, ...]

    def along(self, axis: str, fixed: int) -> list[SettingVerdict]:
        """The points at `fixed` of the other axis, in order of `axis`."""
        return sorted((p for p in self.points if p.value(other_axis(axis)) == fixed), key=lambda p: p.value(axis))

    def fixed_values(self, axis: str) -> list[int]:
        """The values of the other axis, each a line along `axis`."""
        return sorted({p.value(other_axis(axis)) for p in self.points})


def claims_by_setting(bench: pd.DataFrame, confidence: float = stats.DEFAULT_CONFIDENCE,
                      margins: claim_catalogue.Margins = claim_catalogue.Margins()) -> list[ConditionSweep]:
    """Every speed and memory claim's conditions judged at every setting of the bench table.

    Each setting is judged on its own processes (its own variance priors too): settings are not pooled.
    """
    points: dict[tuple[str, str, str], list[SettingVerdict]] = {}
    for batch_size, threads in settings_in(bench):
        results = claim_catalogue.evaluate_claims(at_setting(bench, batch_size, threads), None, None,
                                                  confidence=confidence, margins=margins)
        for result in results:
            for row in result.rows:
                points.setdefault((result.claim_id, row.label, row.metric), []).append(
                    SettingVerdict(batch_size, threads, row))
    return [ConditionSweep(*key, tuple(found)) for key, found in points.items()]


def setting_claim_id(claim_id: str, point: SettingVerdict) -> str:
    """How claims.csv names a claim judged at one setting, e.g. '1 at batch 32, 2 threads'."""
    return f"{claim_id} at batch {point.batch_size}, {point.threads} threads"


def conditions_by_setting(condition_sweeps: list[ConditionSweep]) -> pd.DataFrame:
    """Every condition at every setting as rows of the report's claims table (fwbench.claims.conditions_frame):
    scripts/compare_reports.py then compares two sweeps setting by setting."""
    results = [claim_catalogue.ClaimResult(setting_claim_id(s.claim_id, p), "", claim_catalogue.MEASURED, "", (p.row,))
               for s in condition_sweeps for p in s.points]
    return claim_catalogue.conditions_frame(results)


def verdict_runs(points: list[SettingVerdict], axis: str) -> list[tuple[str, int, int]]:
    """Consecutive points with one verdict, as (verdict, first value, last value) along `axis`."""
    runs: list[list] = []
    for point in points:
        if runs and runs[-1][0] == point.verdict:
            runs[-1][2] = point.value(axis)
        else:
            runs.append([point.verdict, point.value(axis), point.value(axis)])
    return [tuple(run) for run in runs]


def describe_along(points: list[SettingVerdict], axis: str) -> str:
    """The verdicts along one axis in words: 'supported at every batch size', or where each verdict holds,
    e.g. 'contradicted up to batch 32, supported from batch 128 up'."""
    word, plural = AXIS_WORDS[axis]
    runs = verdict_runs(points, axis)
    if len(runs) == 1:
        return f"{runs[0][0]} at every {plural[:-1]} ({', '.join(str(p.value(axis)) for p in points)})"
    lowest, highest = points[0].value(axis), points[-1].value(axis)
    parts = []
    for verdict, first, last in runs:
        if first == last:
            parts.append(f"{verdict} at {word} {first}")
        elif first == lowest:
            parts.append(f"{verdict} up to {word} {last}")
        elif last == highest:
            parts.append(f"{verdict} from {word} {first} up")
        else:
            parts.append(f"{verdict} at {word} {first}-{last}")
    return ", ".join(parts)


def crossovers(sweep: ConditionSweep, axis: str) -> list[str]:
    """For each line along `axis` (one per value of the other axis) whose verdict changes: where it does."""
    lines = []
    for fixed in sweep.fixed_values(axis):
        points = sweep.along(axis, fixed)
        if len(verdict_runs(points, axis)) > 1:
            lines.append(f"at {AXIS_WORDS[other_axis(axis)][0]} {fixed}: {describe_along(points, axis)}")
    return lines


def speedup_over_one_thread(group: pd.DataFrame, threads: int, confidence: float = stats.DEFAULT_CONFIDENCE,
                            metric: str = "train_samples_per_s") -> stats.Comparison | None:
    """Throughput at `threads` over throughput at 1 thread, for one variant's rows at one batch size (all thread
    counts): the ratio of geometric means of the process means, with its interval over processes; None when
    either side is absent."""
    at = [process_means(group[group[THREADS] == count], metric) for count in (threads, 1)]
    if any(len(values) == 0 for values in at):
        return None
    return stats.compare(at[0], at[1], higher_is_better=True, confidence=confidence)
