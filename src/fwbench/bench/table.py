"""The bench table: each job's rows, the joined results, the median/IQR summary.

Jobs write their rows with the csv module (a bench process should not pay
for importing pandas); the aggregating rule reads them all with pandas,
checks the schema and that no two jobs on one machine overlapped in time,
and writes bench_results.csv and bench_summary.csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fwbench.bench import GROUP_COLUMNS, METRIC_COLUMNS, RESULT_COLUMNS
from fwbench.errors import DataError
from fwbench.runtime import write_text_atomic

# Quartiles of the trials, for the interquartile range.
LOWER_QUARTILE = 0.25
UPPER_QUARTILE = 0.75
# Values that are the same on every trial row of a job, carried into the summary as they are.
JOB_COLUMNS = (
    "device", "precision", "batch_size", "trials", "window_steps", "parameter_count", "flops_per_sample",
    "intra_op_threads", "inter_op_threads", "cpu_model", "gpu_model", "framework_version", "hostname",
    "rss_file_after_train_mb", "background_cpu_share", "background_processes", "load_avg_start", "load_avg_end",
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
        table.groupby(["hostname", *GROUP_COLUMNS], sort=False)
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
    return "/".join(str(getattr(job, column)) for column in GROUP_COLUMNS)


def summarize(table):
    """Median and IQR over trials of every metric, per framework x model x mode.

    Also the coefficient of variation of training throughput (std / mean over
    trials), the number the stability target is stated in.
    """
    import pandas as pd

    groups = table.groupby(list(GROUP_COLUMNS), sort=False)
    summary = groups[list(JOB_COLUMNS)].first()
    summary["n_trials"] = groups.size()
    for metric in METRIC_COLUMNS:
        column = groups[metric]
        summary[f"{metric}_median"] = column.median()
        summary[f"{metric}_iqr"] = column.quantile(UPPER_QUARTILE) - column.quantile(LOWER_QUARTILE)
    throughput = groups["train_samples_per_s"]
    summary["train_samples_per_s_cv"] = throughput.std(ddof=1) / throughput.mean()
    return pd.DataFrame(summary).reset_index()


def write_csv_atomic(frame, path: Path) -> None:
    write_text_atomic(path, frame.to_csv(index=False))
