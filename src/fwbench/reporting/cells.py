"""Table cells the report's sections share: numbers, and a mean over processes with its interval."""

from __future__ import annotations

import math

import pandas as pd

from fwbench.bench.table import process_means
from fwbench.stats import mean_ci


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def over_processes_cell(group: pd.DataFrame, metric: str, digits: int) -> str:
    """Mean over the variant's processes with its 95 % t interval: `mean [low–high]`."""
    ci = mean_ci(process_means(group, metric))
    return f"{fmt(ci.mean, digits)} [{fmt(ci.low, digits)}–{fmt(ci.high, digits)}]"
