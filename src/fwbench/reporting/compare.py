"""Compare the verdicts of two reports: two runs on one machine, or one run on each of two machines.

Each report directory holds claims.csv (fwbench.reporting.build.claims_table):
one row per condition of every claim and A/A control, with its estimate,
interval and verdict. Conditions are matched by (claim, condition label,
metric). What a reader wants to know:

- which conditions changed verdict, and which of those flipped between
  "supported" and "contradicted" (the two runs disagree about the direction);
- how many conditions' intervals do not overlap at all: for honest intervals
  of two independent runs of the same code on the same machine this should be
  rare (about 1 in 20 or fewer at 95 %); on two machines it is what differs;
- the same counts over distinct measurements: claims 1 and 2 judge some of the
  same comparisons (tf:graph vs torch:eager), which the counts above hold once
  per claim;
- whether the machine itself ran at another speed: from the two reports'
  results.csv, each bench variant's throughput in B over A. The intervals are
  over the processes of one run: a machine that is slower as a whole in one run
  (other load on the host, another machine) moves the variants by different
  amounts, which no interval of one run covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fwbench.bench.outputs import GROUP_COLUMNS, SETTING_COLUMNS
from fwbench.bench.table import process_means
from fwbench.errors import DataError
from fwbench.stats import CONTRADICTED, SUPPORTED

CLAIMS_TABLE = "claims.csv"
RESULTS_TABLE = "results.csv"
SPEED_METRIC = "train_samples_per_s"
# Beyond this (the default speed margin, config claims.speed_margin), the comparison says that
# the machine itself ran at another speed in one of the runs.
MACHINE_SHIFT_MARGIN = 0.05
# A condition judged by several claims is one measurement: same label, metric and estimates.
MEASUREMENT_COLUMNS = ["label", "metric", "estimate_a", "estimate_b"]
KEY_COLUMNS = ("claim", "label", "metric")
NEEDED_COLUMNS = (*KEY_COLUMNS, "estimate", "ci_low", "ci_high", "verdict")
OPPOSITE = {SUPPORTED, CONTRADICTED}


@dataclass(frozen=True)
class Comparison:
    matched: pd.DataFrame  # one row per condition in both, columns <name>_a and <name>_b, plus flags
    only_a: list[str]
    only_b: list[str]

    @property
    def changed(self) -> pd.DataFrame:
        return self.matched[self.matched["verdict_a"] != self.matched["verdict_b"]]

    @property
    def flips(self) -> pd.DataFrame:
        return self.matched[self.matched["flip"]]

    @property
    def disjoint(self) -> pd.DataFrame:
        return self.matched[self.matched["disjoint"]]

    @property
    def distinct(self) -> pd.DataFrame:
        """The matched conditions with each measurement once (a comparison several claims judge)."""
        return self.matched.drop_duplicates(MEASUREMENT_COLUMNS)


@dataclass(frozen=True)
class SpeedShift:
    """Each bench variant's median process throughput in B over A, summarised over the variants."""

    variants: int
    median: float
    low: float
    high: float


def speed_shift(path_a: Path, path_b: Path) -> SpeedShift | None:
    """How much faster or slower B's bench ran than A's, variant by variant; None without both results tables."""
    tables = [_results(path) for path in (path_a, path_b)]
    if any(table is None for table in tables):
        return None
    # A results.csv from before the bench had settings (batch size, threads) had one: compare by
    # framework x model x mode then.
    columns = GROUP_COLUMNS if all(set(SETTING_COLUMNS) <= set(table.columns) for table in tables) else \
        tuple(column for column in GROUP_COLUMNS if column not in SETTING_COLUMNS)
    medians = [_variant_speed(table, columns) for table in tables]
    ratios = (medians[1] / medians[0]).dropna()
    if ratios.empty:
        return None
    return SpeedShift(len(ratios), float(ratios.median()), float(ratios.min()), float(ratios.max()))


def _results(path: Path) -> pd.DataFrame | None:
    table_path = Path(path) / RESULTS_TABLE
    return pd.read_csv(table_path, low_memory=False) if Path(path).is_dir() and table_path.is_file() else None


def _variant_speed(results: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """Median over a variant's processes of the process's mean window throughput (the bench's process means)."""
    rows = results[(results["source"] == "bench") & (results["metric"] == SPEED_METRIC)]
    rows = rows.assign(value=pd.to_numeric(rows["value"], errors="coerce"))
    return pd.Series({variant: process_means(group, "value").median()
                      for variant, group in rows.groupby(list(columns))})


def read_claims(path: Path) -> pd.DataFrame:
    """claims.csv of a report directory, or the table itself; one line naming what is missing."""
    path = Path(path)
    table_path = path / CLAIMS_TABLE if path.is_dir() else path
    if not table_path.is_file():
        raise DataError(f"{table_path} does not exist: accepted are a report directory holding {CLAIMS_TABLE} "
                        f"(reports/<experiment>/) or the path of such a table")
    table = pd.read_csv(table_path)
    missing = [column for column in NEEDED_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(f"{table_path} lacks columns {missing}: accepted is a claims table written by the report")
    duplicated = table.duplicated(list(KEY_COLUMNS))
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise DataError(f"{table_path} has condition {tuple(first[list(KEY_COLUMNS)])} twice: each must be unique")
    return table


def intervals_disjoint(low_a: float, high_a: float, low_b: float, high_b: float) -> bool:
    """Two intervals share no point (an interval that is undefined overlaps nothing and is not counted)."""
    if not all(math.isfinite(value) for value in (low_a, high_a, low_b, high_b)):
        return False
    return high_a < low_b or high_b < low_a


def compare_tables(a: pd.DataFrame, b: pd.DataFrame) -> Comparison:
    keys = list(KEY_COLUMNS)
    merged = a[list(NEEDED_COLUMNS)].merge(b[list(NEEDED_COLUMNS)], on=keys, how="outer", suffixes=("_a", "_b"),
                                           indicator=True)
    label = merged[keys].astype(str).agg(" | ".join, axis=1)
    only_a = list(label[merged["_merge"] == "left_only"])
    only_b = list(label[merged["_merge"] == "right_only"])
    matched = merged[merged["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    matched["flip"] = [
        {va, vb} == OPPOSITE for va, vb in zip(matched["verdict_a"], matched["verdict_b"])
    ]
    matched["disjoint"] = [
        intervals_disjoint(*values)
        for values in zip(matched["ci_low_a"], matched["ci_high_a"], matched["ci_low_b"], matched["ci_high_b"])
    ]
    return Comparison(matched, only_a, only_b)


def _interval(row, side: str) -> str:
    return f"{row[f'estimate_{side}']:.3g} [{row[f'ci_low_{side}']:.3g}, {row[f'ci_high_{side}']:.3g}]"


def _counts(matched: pd.DataFrame) -> tuple[int, int, int, int]:
    """(conditions, same verdict, flips, disjoint intervals)."""
    same = int((matched["verdict_a"] == matched["verdict_b"]).sum())
    return len(matched), same, int(matched["flip"].sum()), int(matched["disjoint"].sum())


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f} %" if total else "n/a"


def describe(comparison: Comparison, name_a: str, name_b: str, shift: SpeedShift | None = None) -> str:
    """The comparison as text: the counts first, then every condition that changed verdict."""
    changed = comparison.changed
    total, same, flips, disjoint = _counts(comparison.matched)
    distinct, distinct_same, distinct_flips, distinct_disjoint = _counts(comparison.distinct)
    lines = [
        f"A: {name_a}",
        f"B: {name_b}",
        f"conditions in both: {total}",
        f"same verdict: {same} ({_share(same, total)})",
        f"different verdict: {total - same} ({_share(total - same, total)}), of which supported <-> contradicted "
        f"flips: {flips}",
        f"intervals that do not overlap: {disjoint} ({_share(disjoint, total)})",
        f"distinct measurements (a comparison judged by several claims counted once): {distinct}; same verdict "
        f"{distinct_same} ({_share(distinct_same, distinct)}), flips {distinct_flips}, intervals that do not overlap "
        f"{distinct_disjoint} ({_share(distinct_disjoint, distinct)})",
    ]
    if shift is not None:
        lines.append(f"bench throughput B / A over {shift.variants} variants: median {shift.median:.2f} "
                     f"(range {shift.low:.2f} to {shift.high:.2f})")
        if not 1 / (1 + MACHINE_SHIFT_MARGIN) <= shift.median <= 1 + MACHINE_SHIFT_MARGIN:
            lines.append(f"  the machine ran at another speed in one of the runs (median beyond "
                         f"{MACHINE_SHIFT_MARGIN:.0%}): the intervals are over one run's processes and do not cover "
                         f"that; disjoint intervals here are expected, not a sign of wrong intervals")
    if comparison.only_a or comparison.only_b:
        lines.append(f"only in A: {len(comparison.only_a)}; only in B: {len(comparison.only_b)}")
        lines += [f"  only in A: {name}" for name in comparison.only_a]
        lines += [f"  only in B: {name}" for name in comparison.only_b]
    if len(changed):
        lines.append("")
        lines.append("conditions whose verdict differs (estimate [interval], A -> B):")
        for _, row in changed.iterrows():
            flags = [flag for flag, on in (("FLIP", row["flip"]), ("intervals disjoint", row["disjoint"])) if on]
            lines.append(
                f"  claim {row['claim']} | {row['label']} | {row['metric']}: {_interval(row, 'a')} {row['verdict_a']}"
                f" -> {_interval(row, 'b')} {row['verdict_b']}" + (f"  [{', '.join(flags)}]" if flags else "")
            )
    disjoint_same = comparison.disjoint[comparison.disjoint["verdict_a"] == comparison.disjoint["verdict_b"]]
    if len(disjoint_same):
        lines.append("")
        lines.append("same verdict, but intervals that do not overlap:")
        for _, row in disjoint_same.iterrows():
            lines.append(f"  claim {row['claim']} | {row['label']} | {row['metric']}: {_interval(row, 'a')} -> "
                         f"{_interval(row, 'b')} ({row['verdict_a']})")
    return "\n".join(lines)
