"""The bench table: each process's rows, the joined results, the per-variant summary, the schedule.

Jobs write their rows with the csv module (a bench process should not pay
for importing pandas); the aggregating rule reads them all with pandas,
checks the schema and that no two jobs on one machine overlapped in time,
and writes bench_results.csv, bench_summary.csv and bench_schedule.csv.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from fwbench.bench.outputs import GROUP_COLUMNS, METRIC_COLUMNS, PROCESS_COLUMNS, RESULT_COLUMNS
from fwbench.bench.timing import coefficient_of_variation
from fwbench.errors import DataError
from fwbench.runtime import write_text_atomic

# Values that are the same on every row of a variant, carried into the summary as they are.
VARIANT_COLUMNS = (
    "device", "precision", "windows", "window_steps", "parameter_count", "flops_per_sample",
    "intra_op_threads", "inter_op_threads", "cpu_model", "gpu_model", "framework_version", "hostname",
)
# Measured once per window (the rest of METRIC_COLUMNS once per process): these have a within-process spread.
WINDOW_METRICS = (
    "train_samples_per_s", "infer_latency_p50_ms", "infer_latency_p95_ms", "infer_latency_p99_ms",
    "infer_samples_per_s", "peak_rss_train_mb", "peak_rss_infer_mb", "peak_device_train_mb", "peak_device_infer_mb",
)
SCHEDULE_COLUMNS = (
    "schedule_position", "schedule_block", *PROCESS_COLUMNS, "hostname", "job_start_unix", "job_end_unix",
    "background_cpu_share", "steal_cpu_share",
)


def check_columns(columns, source: str) -> None:
    """The table must have exactly the schema's columns, in order."""
    columns = tuple(columns)
    if columns != RESULT_COLUMNS:
        missing = [c for c in RESULT_COLUMNS if c not in columns]
        extra = [c for c in columns if c not in RESULT_COLUMNS]
        raise DataError(
            f"{source} does not have the bench schema (missing {missing or 'none'}, unexpected {extra or 'none'}): "
            f"accepted are exactly fwbench.bench.RESULT_COLUMNS; rerun the bench job"
        )


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write one job's rows as CSV under a temporary name, then rename."""
    for row in rows:
        if set(row) != set(RESULT_COLUMNS):
            check_columns([c for c in RESULT_COLUMNS if c in row] + [c for c in row if c not in RESULT_COLUMNS],
                          f"a row for {path}")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def read_rows(paths):
    """Every job's rows as one DataFrame, schema checked per file."""
    import pandas as pd

    frames = []
    for path in paths:
        frame = pd.read_csv(path, keep_default_na=True)
        check_columns(frame.columns, str(path))
        frames.append(frame)
    if not frames:
        raise DataError("no bench rows to aggregate: the bench grid is empty; list frameworks, models and bench.modes")
    return pd.concat(frames, ignore_index=True)


def check_no_overlap(table) -> None:
    """Timed jobs must run alone: no two jobs on one machine may overlap in time."""
    jobs = (
        table.groupby(["hostname", *PROCESS_COLUMNS], sort=False)
        .agg(start=("job_start_unix", "min"), end=("job_end_unix", "max"))
        .reset_index()
        .sort_values(["hostname", "start"])
    )
    previous = None
    for job in jobs.itertuples(index=False):
        if previous is not None and previous.hostname == job.hostname and job.start < previous.end:
            raise DataError(
                f"bench jobs overlapped on {job.hostname}: {_job_name(previous)} ran until {previous.end:.3f} "
                f"and {_job_name(job)} started at {job.start:.3f}; timed jobs must run alone: rerun them "
                f"(snakemake --forcerun bench) with the workflow profile's machine_share cap"
            )
        previous = job


def _job_name(job) -> str:
    return "/".join(str(getattr(job, column)) for column in GROUP_COLUMNS) + f" replicate {job.replicate}"


def process_means(rows, metric: str):
    """One value per process (replicate) of one variant's rows: the mean of its windows, NaN dropped.

    The windows of one process are not independent trials of a framework;
    these means are the units that intervals and figures are built from.
    """
    return rows.groupby("replicate", sort=True)[metric].mean().dropna()


def within_process_cv(rows, metric: str) -> float:
    """The mean CV of the windows inside each process of one variant's rows (NaN where no process has two)."""
    per_process = [coefficient_of_variation(group[metric].dropna()) for _, group in rows.groupby("replicate")]
    finite = [cv for cv in per_process if math.isfinite(cv)]
    return sum(finite) / len(finite) if finite else math.nan


def summarize(table):
    """Per variant: processes, and for every metric the mean over processes with both spreads.

    `<metric>_mean` is the mean of the process means; `<metric>_cv_between` the
    CV of the process means (how far a new process moves: what the report's
    intervals are built from); `<metric>_cv_within` the mean CV of the windows
    inside one process, for the metrics measured per window.
    """
    import pandas as pd

    variants = table.groupby(list(GROUP_COLUMNS), sort=False)
    rows_of = dict(list(variants))
    summary = variants[list(VARIANT_COLUMNS)].first()
    summary["processes"] = variants["replicate"].nunique()
    for metric in METRIC_COLUMNS:
        means = {variant: process_means(rows, metric) for variant, rows in rows_of.items()}
        summary[f"{metric}_mean"] = [means[variant].mean() for variant in summary.index]
        summary[f"{metric}_cv_between"] = [coefficient_of_variation(means[variant]) for variant in summary.index]
    for metric in WINDOW_METRICS:
        summary[f"{metric}_cv_within"] = [within_process_cv(rows_of[variant], metric) for variant in summary.index]
    return pd.DataFrame(summary).reset_index()


def schedule_table(table):
    """The timed processes in the order they ran, with their start and end: the schedule as it happened."""
    processes = table.drop_duplicates(list(PROCESS_COLUMNS))[list(SCHEDULE_COLUMNS)]
    return processes.sort_values("schedule_position").reset_index(drop=True)


def write_csv_atomic(frame, path: Path) -> None:
    write_text_atomic(path, frame.to_csv(index=False))
