"""One bench job (framework x model x mode), and the aggregation of all of them.

`bench_variant` is what scripts/bench.py runs for a Snakemake job; it checks
the mode before importing either framework, so a wrong mode costs nothing.
Order of a job (one process: one replicate of one variant): configure threads,
precision and determinism; load the preprocessed training arrays; read the
anonymous-memory baseline; build the pipeline's adapter; apply the mode; one
training call covering warm-up, every timed window and the untimed memory
phase; inference after each window's worth; one CSV row per window, and the
job's record (config and tags).

`aggregate_results` (bench_table) joins the rows and logs one MLflow child run
per job from its rows and record, so that MLflow's import and writes stay out of
the serial chain of timed jobs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fwbench.bench.grid import bench_schedule, job_mode, scheduled_job, window_steps
from fwbench.bench.outputs import (
    METRIC_COLUMNS,
    PROCESS_COLUMNS,
    job_rows_path,
    record_path_of,
    results_path,
    schedule_path,
    summary_path,
)
from fwbench.bench.contention import BUSY_SHARE, BackgroundCpu, describe
from fwbench.bench.memory import AnonPeak, PeakRss, anon_mb
from fwbench.bench.table import (
    check_no_overlap,
    read_rows,
    schedule_table,
    summarize,
    write_csv_atomic,
    write_rows,
)
from fwbench.bench.timing import (
    StepClock,
    TrainingPlan,
    coefficient_of_variation,
    throughput_cv,
    time_calls,
)
from fwbench.errors import DataError
from fwbench.frameworks import registry as frameworks
from fwbench.models.architecture import flops_per_sample
from fwbench.runtime import imports_refused, write_text_atomic

log = logging.getLogger(__name__)

# Optional integrations Keras imports when installed; a bench job uses none of them (load_backend).
UNUSED_INTEGRATIONS = ("matplotlib", "sklearn", "pandas")
LATENCY_QUANTILES = (50, 95, 99)
MS_PER_S = 1000.0
LATENCY_BATCH = 1
# Tag naming the bench job a run was logged for (machine and start time), so it is logged once.
BENCH_JOB_TAG = "bench_job"
# The epoch whose sample order (fwbench.training.loop.epoch_order) the bench replays: the first.
BENCH_EPOCH = 1


def load_backend(framework: str):
    """Import the framework's module (seconds of work) only once the job's config is known to be valid.

    Keras imports matplotlib, scikit-learn and pandas whenever they are
    installed, for integrations a bench job never uses (a third of
    `import keras, tensorflow`; measured: bench/README.md). They are kept out
    while the framework loads; Keras then runs without those integrations, on
    the same training and inference path.
    """
    with imports_refused(UNUSED_INTEGRATIONS):
        return frameworks.load(framework)


@dataclass
class TrainingResult:
    window_s: list[float]  # every window timed, in order
    first_step_s: float
    peak_rss_first_step_mb: float
    peak_rss_window_mb: list[float]
    peak_device_window_mb: list[float]
    peak_anon_mb: float  # above the baseline, during the memory phase
    anon_samples: int
    compile_cache: str


@dataclass
class InferenceTrial:
    latencies_s: list[float]
    batch_seconds: list[float]
    peak_rss_mb: float
    peak_device_mb: float


@dataclass
class PhaseMemory:
    """Memory bookkeeping at the training loop's step boundaries (outside the timed windows)."""

    plan: TrainingPlan
    rss: PeakRss
    anon: AnonPeak
    backend: object
    first_step_peak: float = math.nan
    window_peak: dict[int, float] = field(default_factory=dict)
    window_device_peak: dict[int, float] = field(default_factory=dict)

    def reset(self) -> None:
        self.rss.reset()
        self.backend.reset_device_peak()

    def on_boundary(self, poll: int) -> None:
        """Read the peak of the phase this poll closes, then start the next phase.

        The anonymous-memory sampler runs only between the memory phase's two
        polls, after the last timed window has closed.
        """
        memory_polls = self.plan.memory_polls or (None, None)
        if poll == memory_polls[1]:
            self.anon.stop()
        if poll == self.plan.first_step_poll:
            self.first_step_peak = self.rss.peak_mb()
        window = self.plan.window_closed_by(poll)
        if window is not None:
            self.window_peak[window] = self.rss.peak_mb()
            self.window_device_peak[window] = self.backend.device_peak_mb()
        self.reset()
        if poll == memory_polls[0]:
            self.anon.start()


@dataclass
class PhaseLog:
    """Logs each phase of a job as it ends, with its seconds, so a job log shows where its time went."""

    started: float
    last: float = math.nan

    def done(self, phase: str) -> None:
        now = time.time()
        since = self.started if math.isnan(self.last) else self.last
        log.info("%s: %.2f s (%.2f s into the job)", phase, now - since, now - self.started)
        self.last = now


def bench_inputs(cfg: DictConfig, steps: int, whole_epoch: bool = False):
    """The pipeline's preprocessed training arrays and a sample order for `steps` steps.

    The order is seeded and random, drawn as the pipeline draws an epoch's
    (epoch_order) over the samples kept; a training split smaller than the
    steps need (the smoke dataset) is cycled through again. By default the
    arrays are cut to what the steps need.

    With `whole_epoch` (bench jobs) the order covers the whole split, at least
    one epoch, and the arrays come back already in that order, with order None:
    every job then holds one epoch of data in either framework, whatever
    number of steps its mode's windows plan for, and the Keras adapter makes no
    re-ordered copy of its own (which a Keras user's `fit` would not make; the
    torch adapter never copied). The loop stops once the windows are timed.
    """
    from fwbench.config import processed_dir
    from fwbench.data.preprocess import load_split, read_manifest
    from fwbench.training.loop import epoch_order

    data_dir = processed_dir(cfg)
    num_classes = read_manifest(data_dir)["num_classes"]
    x_all, y_all = load_split(data_dir, "train")
    needed = steps * cfg.trainer.batch_size
    if whole_epoch:
        order = np.resize(epoch_order(cfg.seed, BENCH_EPOCH, len(x_all)), max(needed, len(x_all)))
        return x_all[order], y_all[order], None, num_classes
    # Copies, so the full training arrays are freed before memory is measured.
    kept = min(needed, len(x_all))
    x, y = x_all[:kept].copy(), y_all[:kept].copy()
    del x_all, y_all
    order = np.resize(epoch_order(cfg.seed, BENCH_EPOCH, kept), needed)
    return x, y, order, num_classes


def cycle(x: np.ndarray, count: int) -> np.ndarray:
    """`count` samples of x, repeating it when it is shorter."""
    return x[np.arange(count) % len(x)]


def measure_training(adapter, backend, plan: TrainingPlan, x, y, order, rss: PeakRss,
                     anon: AnonPeak) -> TrainingResult:
    """One call of the adapter's own training entry point; the StepClock times its windows."""
    memory = PhaseMemory(plan, rss, anon, backend)
    clock = StepClock(plan, sync=backend.sync(), on_boundary=memory.on_boundary)
    memory.reset()
    called_at = clock.clock()
    adapter.train_epoch(x, y, order, clock)
    windows = clock.window_seconds()
    return TrainingResult(
        window_s=windows,
        first_step_s=clock.first_step_seconds(called_at),
        peak_rss_first_step_mb=memory.first_step_peak,
        peak_rss_window_mb=[memory.window_peak[w] for w in range(len(windows))],
        peak_device_window_mb=[memory.window_device_peak[w] for w in range(len(windows))],
        peak_anon_mb=anon.above_baseline_mb(),
        anon_samples=anon.samples,
        compile_cache=backend.compile_cache_note(),
    )


def measure_inference(adapter, backend, bench_cfg, x, batch_size: int, rss: PeakRss) -> list[InferenceTrial]:
    """Batch-1 latency and large-batch throughput once per window, after untimed warm-up calls.

    The warm-up calls trace or compile each input shape (batch 1 and the large batch).
    """
    predict = backend.predictor(adapter)
    sync = backend.sync()
    single, batch = x[:LATENCY_BATCH], cycle(x, batch_size)
    for _ in range(bench_cfg.latency_warmup_calls):
        predict(single)
    predict(batch)
    trials = []
    for _ in range(bench_cfg.windows):
        rss.reset()
        backend.reset_device_peak()
        latencies = time_calls(lambda: predict(single), bench_cfg.latency_calls, sync=sync)
        batch_seconds = time_calls(lambda: predict(batch), bench_cfg.inference_calls, sync=sync)
        trials.append(InferenceTrial(latencies, batch_seconds, rss.peak_mb(), backend.device_peak_mb()))
    return trials


def environment(backend, cfg: DictConfig, policy: str) -> dict:
    """Machine, accelerator, library versions, threads and precision, read back from the framework."""
    from fwbench.runtime import gpu_info, machine_info

    machine = machine_info()
    threads = backend.applied_threads()
    flags = backend.tf32_flags()
    return {
        "threads": int(cfg.threads),
        "intra_op_threads": threads["intra_op"],
        "inter_op_threads": threads["inter_op"],
        "cpu_model": machine["cpu_model"],
        "cpu_count": machine["cpu_count"],
        **gpu_info(backend),
        "framework_version": backend.version(),
        "tf32_matmul": flags["tf32_matmul"],
        "tf32_conv": flags["tf32_conv"],
        "mixed_precision_policy": backend.mixed_precision_policy(policy),
        "deterministic": backend.determinism_enabled(),
        "hostname": machine["hostname"],
    }


def inference_batch_size(cfg) -> int:
    """The inference-throughput calls' batch size: trainer.eval_batch_size, or the training batch size when
    bench.infer_batch_size is `train` (a sweep's inference throughput at every batch size)."""
    return int(cfg.trainer.batch_size if cfg.bench.infer_batch_size == "train" else cfg.trainer.eval_batch_size)


def job_values(cfg, job, plan: TrainingPlan, adapter, train: TrainingResult, env: dict, memory: dict,
               shapes: dict, times: dict) -> dict:
    """The columns that are the same on every window row of the process."""
    return {
        "experiment": cfg.experiment.name,
        "dataset": cfg.dataset.name,
        "synthetic": bool(cfg.dataset.get("synthetic", False)),
        "framework": job.framework,
        "model": job.model,
        "mode": job.mode,
        "replicate": job.replicate,
        "schedule_position": job.position,
        "schedule_block": job.block,
        "device": adapter.device,
        "precision": cfg.bench.precision,
        "batch_size": cfg.trainer.batch_size,
        "optimizer": cfg.trainer.optimizer,
        "lr": cfg.trainer.lr,
        "warmup_steps": plan.warmup_steps,
        "window_steps": plan.window_steps,
        "windows": plan.windows,
        "first_step_s": train.first_step_s,
        "infer_batch_size": inference_batch_size(cfg),
        "peak_rss_first_step_mb": train.peak_rss_first_step_mb,
        "peak_anon_train_mb": train.peak_anon_mb,
        "memory_phase_samples": train.anon_samples,
        "parameter_count": adapter.parameter_count,
        "flops_per_sample": flops_per_sample(cfg.model, shapes["input_shape"], shapes["num_classes"]),
        "compile_cache": train.compile_cache,
        "mlflow_run_id": "",
        **memory,
        **env,
        **times,
    }


def window_values(window: int, plan: TrainingPlan, batch_size: int, infer_batch: int,
                  train: TrainingResult, infer: InferenceTrial) -> dict:
    """The columns measured per window (and the inference calls after it)."""
    latencies_ms = [seconds * MS_PER_S for seconds in infer.latencies_s]
    p50, p95, p99 = np.percentile(latencies_ms, LATENCY_QUANTILES)
    return {
        "window": window,
        "train_samples_per_s": plan.window_steps * batch_size / train.window_s[window],
        "train_window_s": train.window_s[window],
        "latency_calls": len(latencies_ms),
        "infer_latency_p50_ms": float(p50),
        "infer_latency_p95_ms": float(p95),
        "infer_latency_p99_ms": float(p99),
        "infer_samples_per_s": infer_batch * len(infer.batch_seconds) / sum(infer.batch_seconds),
        "peak_rss_train_mb": train.peak_rss_window_mb[window],
        "peak_rss_infer_mb": infer.peak_rss_mb,
        "peak_device_train_mb": train.peak_device_window_mb[window],
        "peak_device_infer_mb": infer.peak_device_mb,
    }


def bench_variant(cfg: DictConfig, out_path: Path | None = None) -> list[dict]:
    """Run one bench process, write its rows and its record (for bench_table's MLflow run); returns the rows."""
    job_start, load_avg_start = time.time(), os.getloadavg()[0]
    framework, model = cfg.framework.name, cfg.model.name
    mode = job_mode(cfg)  # one-line ConfigError for a mode the framework lacks, before any import
    variant = (framework, model, mode, int(cfg.trainer.batch_size), int(cfg.threads))
    job = scheduled_job(cfg, variant, cfg.bench.replicate)
    out_path = Path(out_path) if out_path else job_rows_path(cfg, *job.variant, job.replicate)
    log.info("bench job start %.3f: %s/%s/%s batch %d, %d threads, replicate %d (place %d of the schedule), "
             "load average %.2f", job_start, framework, model, mode, job.batch_size, job.threads, job.replicate,
             job.position, load_avg_start)

    progress = PhaseLog(job_start)
    backend = load_backend(framework)
    backend.prepare_process()
    from fwbench.training.run import make_adapter

    backend.configure(cfg.threads, cfg.seed, tf32=cfg.bench.tf32, deterministic=cfg.bench.deterministic)
    progress.done(f"{framework} imported and configured")
    policy = backend.before_build(cfg.bench.precision)
    steps_per_window = window_steps(cfg, framework, model, mode, job.batch_size)
    plan = TrainingPlan(cfg.bench.warmup_steps, steps_per_window, cfg.bench.windows, frameworks.spec(framework).poll_lag,
                        memory_steps=steps_per_window)
    x, y, order, num_classes = bench_inputs(cfg, plan.steps, whole_epoch=True)
    anon = AnonPeak(baseline_mb=anon_mb())
    adapter = make_adapter(cfg, x.shape[1:], num_classes)
    backend.apply_mode(adapter, mode, cfg.bench.precision)
    progress.done(f"data loaded, model built in mode {mode}")

    rss = PeakRss()
    rss_before_train = rss.current_mb()
    background = BackgroundCpu()
    train = measure_training(adapter, backend, plan, x, y, order, rss, anon)
    rss_file_after_train = rss.file_mb()
    progress.done(f"training: first step {train.first_step_s:.2f} s, {plan.windows} windows of "
                  f"{plan.window_steps} steps {sum(train.window_s):.2f} s, memory phase of {plan.memory_steps} "
                  f"steps ({train.anon_samples} readings)")
    log_windows(plan, train.window_s, cfg.trainer.batch_size)
    infer_batch = inference_batch_size(cfg)
    infer = measure_inference(adapter, backend, cfg.bench, x, infer_batch, rss)
    background_share, steal_share = background.share(), background.steal_share()
    background_busiest = describe(background.busiest())
    progress.done("inference")
    env = environment(backend, cfg, policy)
    memory = {"rss_method": rss.method, "rss_before_train_mb": rss_before_train,
              "rss_anon_baseline_mb": anon.baseline_mb, "rss_file_after_train_mb": rss_file_after_train}
    shapes = {"input_shape": tuple(x.shape[1:]), "num_classes": num_classes}
    times = {
        "background_cpu_share": background_share,
        "steal_cpu_share": steal_share,
        "background_processes": background_busiest,
        "job_start_unix": job_start, "job_end_unix": time.time(),
        "load_avg_start": load_avg_start, "load_avg_end": os.getloadavg()[0],
    }
    values = job_values(cfg, job, plan, adapter, train, env, memory, shapes, times)
    rows = [
        {**values, **window_values(w, plan, cfg.trainer.batch_size, infer_batch, train, infer[w])}
        for w in range(plan.windows)
    ]
    write_job_record(cfg, record_path_of(out_path))
    write_rows(out_path, rows)
    log_job_summary(rows)
    log.info("bench job end %.3f -> %s", times["job_end_unix"], out_path)
    return rows


def write_job_record(cfg: DictConfig, path: Path) -> None:
    """The job's resolved config and what its environment says (rule, log, SLURM job):
    bench_table logs the job's MLflow run from it."""
    from fwbench.tracking.runs import environment_tags

    record = {"config": OmegaConf.to_container(cfg, resolve=True), "tags": environment_tags()}
    write_text_atomic(path, OmegaConf.to_yaml(record))


def log_windows(plan: TrainingPlan, windows: list[float], batch_size: int) -> None:
    """Every window's throughput and their CV (all of them: none is selected)."""
    rates = ", ".join(f"{plan.window_steps * batch_size / seconds:.0f}" for seconds in windows)
    log.info("windows' samples/s: %s (CV %.1f%% within this process)", rates, 100 * throughput_cv(windows))


def log_job_summary(rows: list[dict]) -> None:
    throughput = np.array([row["train_samples_per_s"] for row in rows])
    first = rows[0]
    log.info(
        "train %.0f samples/s (mean of %d windows), first step %.2f s | "
        "batch-1 latency p50 %.2f ms | inference %.0f samples/s | anonymous memory peak %.1f MiB above the "
        "baseline of %.0f MiB (%d readings) | peak total RSS train %.0f MiB (%s; %.0f MiB of it mapped files) | "
        "other processes took %.0f%% of the machine, the hypervisor's steal %.0f%%",
        throughput.mean(), len(rows), first["first_step_s"],
        np.median([row["infer_latency_p50_ms"] for row in rows]),
        np.median([row["infer_samples_per_s"] for row in rows]),
        first["peak_anon_train_mb"], first["rss_anon_baseline_mb"], first["memory_phase_samples"],
        np.median([row["peak_rss_train_mb"] for row in rows]), first["rss_method"], first["rss_file_after_train_mb"],
        100 * first["background_cpu_share"], 100 * first["steal_cpu_share"],
    )
    if first["background_cpu_share"] > BUSY_SHARE:
        log.warning("the machine was busy while this job measured: its numbers are not an idle machine's "
                    "(the hypervisor's steal %.0f%% of the machine; busiest other processes: %s)",
                    100 * first["steal_cpu_share"], first["background_processes"] or "none seen")


def aggregate_results(cfg: DictConfig) -> Path:
    """Join every bench process's rows into bench_results.csv (+ the summary and the schedule as it ran)."""
    schedule = bench_schedule(cfg)
    paths = [job_rows_path(cfg, *job.variant, job.replicate) for job in schedule]
    needed = paths + [record_path_of(path) for path in paths]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DataError(f"bench results missing: {missing[0]} (and {len(missing) - 1} more); run the bench jobs first")
    table = read_rows(paths)
    check_no_overlap(table)
    table["mlflow_run_id"] = log_bench_runs(cfg, table)
    busy = table[table["background_cpu_share"] > BUSY_SHARE].drop_duplicates(list(PROCESS_COLUMNS))
    for job in busy.itertuples(index=False):
        seen = job.background_processes if isinstance(job.background_processes, str) else ""  # CSV: empty -> NaN
        log.warning("%s/%s/%s batch %d, %d threads, replicate %d measured on a busy machine: other processes "
                    "took %.0f%% of it (the hypervisor's steal %.0f%%; busiest: %s)", job.framework, job.model,
                    job.mode, job.batch_size, job.threads, job.replicate,
                    100 * job.background_cpu_share, 100 * job.steal_cpu_share, seen or "none seen")
    write_csv_atomic(table, results_path(cfg))
    write_csv_atomic(summarize(table), summary_path(cfg))
    write_csv_atomic(schedule_table(table), schedule_path(cfg))
    log.info("wrote %s (%d rows), %s and %s", results_path(cfg), len(table), summary_path(cfg), schedule_path(cfg))
    return results_path(cfg)


def log_bench_runs(cfg: DictConfig, table) -> list[str]:
    """Log one MLflow child run per bench process; returns each row's run id.

    A process already logged (same machine and start time) keeps its run, so a
    rerun of bench_table after one job reran logs only that job.
    """
    run_ids = {}
    for process, rows in table.groupby(list(PROCESS_COLUMNS), sort=False):
        rows_path = job_rows_path(cfg, *process)
        run_ids[process] = log_bench_run(record_path_of(rows_path), rows_path, rows)
    return [run_ids[process] for process in zip(*(table[column] for column in PROCESS_COLUMNS))]


def log_bench_run(record_path: Path, rows_path: Path, rows) -> str:
    """The process's run: its config and tags from its record; each window's metrics at step = window;
    the process's mean and within-process CV as summary metrics; the rows file as an artifact."""
    from fwbench.tracking.runs import child_run, find_child_run

    record = OmegaConf.load(record_path)
    job_cfg = record.config
    first = rows.iloc[0]
    job_id = f"{first['hostname']}:{first['job_start_unix']:.6f}"
    logged = find_child_run(job_cfg, BENCH_JOB_TAG, job_id)
    if logged:
        return logged
    tags = {**record.tags, "mode": first["mode"], "batch_size": str(first["batch_size"]),
            "threads": str(first["threads"]), "replicate": str(first["replicate"]),
            "schedule_position": str(first["schedule_position"]), BENCH_JOB_TAG: job_id}
    with child_run(job_cfg, "bench", tags=tags, system_metrics=False) as tracked:
        tracked.log_history(rows[["window", *METRIC_COLUMNS]].to_dict("records"), step_key="window")
        tracked.log_metrics({f"{metric}_mean": float(rows[metric].mean()) for metric in METRIC_COLUMNS
                             if rows[metric].notna().any()})
        tracked.log_metrics({"train_samples_per_s_cv_within": coefficient_of_variation(rows["train_samples_per_s"])})
        tracked.log_artifact(rows_path)
    log.info("MLflow run %s: bench %s/%s/%s batch %s, %s threads, replicate %s", tracked.run_id,
             first["framework"], first["model"], first["mode"], first["batch_size"], first["threads"],
             first["replicate"])
    return tracked.run_id or ""
