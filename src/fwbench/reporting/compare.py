"""Compare the verdicts of two reports: two runs on one machine, or one run on each of two machines.

Each report directory holds claims.csv (fwbench.reporting.build.claims_table):
one row per condition of every claim and A/A control, with its estimate,
interval and verdict. Conditions are matched by (claim, condition label,
metric). What a reader wants to know:

- which conditions changed verdict, and which of those flipped between
  "supported" and "contradicted" (the two runs disagree about the direction);
- how many conditions' intervals do not overlap at all: for honest intervals
  of two independent runs of the same code on the same machine this should be
  rare (about 1 in 20 or fewer at 95 %); on two machines it is what differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fwbench.errors import DataError
from fwbench.stats import CONTRADICTED, SUPPORTED

CLAIMS_TABLE = "claims.csv"
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


def describe(comparison: Comparison, name_a: str, name_b: str) -> str:
    """The comparison as text: the counts first, then every condition that changed verdict."""
    matched, changed = comparison.matched, comparison.changed
    total = len(matched)
    same = total - len(changed)
    share = (lambda count: f"{100 * count / total:.1f} %") if total else (lambda count: "n/a")
    lines = [
        f"A: {name_a}",
        f"B: {name_b}",
        f"conditions in both: {total}",
        f"same verdict: {same} ({share(same)})",
        f"different verdict: {len(changed)} ({share(len(changed))}), of which supported <-> contradicted flips: "
        f"{len(comparison.flips)}",
        f"intervals that do not overlap: {len(comparison.disjoint)} ({share(len(comparison.disjoint))})",
    ]
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
