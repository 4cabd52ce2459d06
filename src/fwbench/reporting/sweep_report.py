"""The report's sweep sections: throughput against batch size and threads, parallel efficiency, and the claims
judged at every setting, with the places where a verdict flips (fwbench.sweep)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fwbench import sweep
from fwbench.frameworks import registry as frameworks
from fwbench.reporting import figures
from fwbench.reporting.cells import fmt, over_processes_cell
from fwbench.reporting.render import Section, Table

FIGURES = {"batch": "sweep_batch_size.png", "threads": "sweep_threads.png"}


def sweep_sections(bench: pd.DataFrame | None, reference: tuple[int, int],
                   condition_sweeps: list[sweep.ConditionSweep], confidence: float, figure_dir: Path) -> list[Section]:
    """Nothing for a bench of one setting; else the scaling, efficiency and per-setting verdict sections
    (`condition_sweeps`: fwbench.sweep.claims_by_setting of the same table)."""
    if not sweep.is_sweep(bench):
        return []
    return [scaling_section(bench, reference, figure_dir), efficiency_section(bench, confidence),
            verdicts_section(condition_sweeps)]


def _listed(values) -> str:
    return ", ".join(str(value) for value in values)


def scaling_section(bench: pd.DataFrame, reference: tuple[int, int], figure_dir: Path) -> Section:
    settings = sweep.settings_in(bench)
    batches = sorted({batch for batch, _ in settings})
    threads = sorted({count for _, count in settings})
    reference_batch, _ = reference
    batch_figure = figures.scaling_figure(bench, sweep.BATCH, sweep.THREADS, {}, "training batch size",
                                          "Training throughput against batch size", figure_dir / FIGURES["batch"])
    threads_figure = figures.scaling_figure(bench, sweep.THREADS, None, {sweep.BATCH: reference_batch},
                                            "threads", f"Training throughput against threads at batch "
                                            f"{reference_batch}", figure_dir / FIGURES["threads"])
    rows = []
    for (model, framework, mode, batch, count), group in bench.groupby(
            ["model", "framework", "mode", sweep.BATCH, sweep.THREADS], sort=True):
        rows.append([model, frameworks.display_name(framework), mode, str(batch), str(count),
                     str(group["replicate"].nunique()), over_processes_cell(group, "train_samples_per_s", 0),
                     over_processes_cell(group, "infer_samples_per_s", 0),
                     str(int(group["infer_batch_size"].iloc[0])),
                     over_processes_cell(group, "infer_latency_p50_ms", 3)])
    return Section(
        "sweep", "Batch size and threads",
        [f"Every variant was benched at batch sizes {_listed(batches)} and {_listed(threads)} threads, each "
         "setting a variant of its own with its own processes, interleaved with all the others in the schedule. "
         f"The sections above are at the reference setting (batch {reference[0]}, {reference[1]} threads); "
         "this one and the next two cover every setting. Windows at other batch sizes hold the same number of "
         "samples as at the reference (at most bench.max_window_steps steps and one epoch of data per process). "
         "Numbers are means over processes with 95 % t intervals; the figures' bands are those intervals."],
        [Table(["model", "framework", "mode", "batch", "threads", "processes", "training samples/s [95 % CI]",
                "inference samples/s [95 % CI]", "inference batch", "batch-1 latency p50 ms [95 % CI]"], rows)],
        [(batch_figure, "training throughput against batch size"),
         (threads_figure, "training throughput against threads")],
    )


def efficiency_section(bench: pd.DataFrame, confidence: float) -> Section:
    """Speed-up over 1 thread and parallel efficiency (speed-up / threads), per variant and batch size."""
    counts = sorted(bench[sweep.THREADS].unique())
    if 1 not in counts or len(counts) < 2:
        return Section("parallel-efficiency", "Parallel efficiency",
                       [f"Not measured: the sweep has thread counts {_listed(counts)}; it needs 1 and at least "
                        "one more."])
    rows = []
    for (model, framework, mode, batch), group in bench.groupby(["model", "framework", "mode", sweep.BATCH],
                                                                sort=True):
        for count in (c for c in counts if c > 1):
            speedup = sweep.speedup_over_one_thread(group, count, confidence)
            if speedup is None:
                continue
            rows.append([model, frameworks.display_name(framework), mode, str(batch), str(count),
                         f"{fmt(speedup.estimate, 2)} [{fmt(speedup.ci_low, 2)}, {fmt(speedup.ci_high, 2)}]",
                         f"{fmt(100 * speedup.estimate / count, 0)} [{fmt(100 * speedup.ci_low / count, 0)}, "
                         f"{fmt(100 * speedup.ci_high / count, 0)}]"])
    return Section(
        "parallel-efficiency", "Parallel efficiency",
        ["Speed-up of training throughput over 1 thread (ratio of geometric means over processes, with its "
         f"{100 * confidence:g} % Welch t interval) and parallel efficiency, the speed-up divided by the threads "
         "(100 % = perfect scaling)."],
        [Table(["model", "framework", "mode", "batch", "threads", "speed-up over 1 thread [CI]",
                "efficiency % [CI]"], rows)],
    )


def _cell(point: sweep.SettingVerdict | None) -> str:
    return "—" if point is None else f"{point.verdict} ({fmt(point.estimate, 2)})"


def _verdict_table(condition_sweeps: list[sweep.ConditionSweep], axis: str) -> Table:
    """One row per condition and value of the other axis; one column per value of `axis`; where it flips."""
    values = sorted({p.value(axis) for s in condition_sweeps for p in s.points})
    rows = []
    for condition in condition_sweeps:
        for fixed in condition.fixed_values(axis):
            line = condition.along(axis, fixed)
            by_value = {p.value(axis): p for p in line}
            flips = sweep.describe_along(line, axis) if len(sweep.verdict_runs(line, axis)) > 1 else "no flip"
            rows.append([condition.claim_id, condition.label, condition.metric, str(fixed),
                         *[_cell(by_value.get(value)) for value in values], flips])
    word, _ = sweep.AXIS_WORDS[axis]
    return Table(["claim", "condition", "metric", sweep.AXIS_WORDS[sweep.other_axis(axis)][0],
                  *[f"{word} {value}" for value in values], "where the verdict flips"], rows)


def verdicts_section(condition_sweeps: list[sweep.ConditionSweep]) -> Section:
    flips = [f"Claim {s.claim_id}, {s.label} ({s.metric}), {line}"
             for s in condition_sweeps for axis in (sweep.BATCH, sweep.THREADS) for line in sweep.crossovers(s, axis)]
    tables = [_verdict_table(condition_sweeps, sweep.BATCH)]
    if len({p.threads for s in condition_sweeps for p in s.points}) > 1:
        tables.append(_verdict_table(condition_sweeps, sweep.THREADS))
    return Section(
        "claims-by-setting", "The claims at every batch size and thread count",
        ["Each speed and memory claim judged at every setting on that setting's processes alone, with the same "
         "intervals and margins as above; a cell is the verdict and the estimate (ratio a/b). The first table "
         "reads each condition along the batch sizes at each thread count, the second along the thread counts "
         "at each batch size.",
         "Where the verdict flips: " + ("; ".join(flips) + "." if flips else "nowhere: every condition has the "
                                        "same verdict at every setting.")],
        tables,
    )
