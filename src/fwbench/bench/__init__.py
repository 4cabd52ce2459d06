"""Speed and memory runs: every bench variant (framework x model x mode) in several processes.

The process is the unit of replication: a variant is measured in
`bench.replicates` independent processes (jobs), and the intervals of the
report are over processes, never over windows of one process. The timed
processes run one at a time in a seeded, interleaved order (`bench_schedule`:
randomised blocks, each block runs every variant once in a shuffled order), so
that the machine's slow drift reaches every side alike.

A job (scripts/bench.py, `run.bench_variant`) trains with the pipeline's own
adapters (Keras `fit` on in-memory arrays; the torch adapter's loop over
pre-loaded tensors) with the trainer config the training runs use, and measures:

- training throughput (samples/s) over exactly `windows` windows of
  `window_steps` steps each, after `warmup_steps` untimed steps; every window
  is a row, none is selected (timing.TrainingPlan);
- time to the end of the first step (tracing and compilation), on its own;
- inference latency at batch 1 (p50/p95/p99 over `latency_calls` calls) and
  inference throughput at `trainer.eval_batch_size`, once per window;
- memory that the code owns: the peak of anonymous memory above the
  process's baseline after the framework import and the data load, in an
  untimed phase after the windows (memory.AnonPeak); the total peak RSS per
  window beside it, for reference, and on a GPU the framework's peak device
  allocation;
- parameter count and analytic forward FLOPs per sample.

It writes one CSV row per window (RESULT_COLUMNS below); `aggregate` joins every
job's rows into bench_results.csv (the tidy table the report reads), a
per-variant summary with the within- and between-process spread, and the
schedule as it ran. This module stays free of TensorFlow, torch and pandas:
rules/common.smk imports it to build the grid.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fwbench.errors import ConfigError

# Execution modes per framework. tf: eager = `run_eagerly=True`, graph =
# tf.function without XLA (`jit_compile=False`), xla = `jit_compile=True`.
# torch: eager = plain modules, compile = `torch.compile`.
MODES = {"tf": ("eager", "graph", "xla"), "torch": ("eager", "compile")}
# The mode a user gets without asking: Keras `fit` traces a tf.function; torch runs eagerly.
DEFAULT_MODES = {"tf": "graph", "torch": "eager"}
PRECISIONS = ("fp32", "bf16")

RESULTS_FILE = "bench_results.csv"
SUMMARY_FILE = "bench_summary.csv"
SCHEDULE_FILE = "bench_schedule.csv"
JOB_ROWS_SUFFIX = ".csv"
# Beside each job's rows: the job's resolved config and its rule, log and SLURM job, from which
# bench_table logs the job's MLflow run (a bench process does not import MLflow).
JOB_RECORD_SUFFIX = ".job.yaml"

# The tidy table: one row per framework x model x mode x replicate x window.
# Process-level values (first step, memory, environment) repeat on every window
# row of the process. NaN where a value does not apply (device memory on a CPU).
# The report reads these names.
SCHEMA = {
    # identity
    "experiment": "experiment name (config experiment.name)",
    "dataset": "dataset name",
    "framework": "tf | torch",
    "model": "model name (config/model)",
    "mode": "execution mode, see MODES",
    "replicate": "process of this variant, 0-based: each replicate is a process of its own (bench.replicates; "
                 "the A/A control variants run an even number)",
    "window": "timed window of the process, 0-based; every window timed is a row",
    "schedule_position": "the process's place in the interleaved order of all timed processes, 0 = first",
    "schedule_block": "randomised block of that order: every block runs each variant once, shuffled",
    # recipe
    "device": "cpu | cuda, chosen automatically (CUDA when present)",
    "precision": "fp32 | bf16 (mixed precision)",
    "tf32_matmul": "TF32 allowed on matmul (set explicitly from bench.tf32, read back)",
    "tf32_conv": "TF32 allowed on convolution (set explicitly from bench.tf32, read back)",
    "deterministic": "framework determinism on (bench.deterministic), read back",
    "batch_size": "training batch size (trainer.batch_size)",
    "optimizer": "trainer.optimizer",
    "lr": "trainer.lr",
    "warmup_steps": "untimed training steps before the first window (the first step among them)",
    "window_steps": "training steps per timed window",
    "windows": "timed windows per process (bench.windows)",
    # training
    "train_samples_per_s": "training throughput over this window",
    "train_window_s": "wall time of this window",
    "first_step_s": "from calling the training entry point to the end of the first step (tracing, compilation); per job",
    # inference
    "latency_calls": "batch-1 inference calls timed after this window",
    "infer_latency_p50_ms": "batch-1 inference latency, median of those calls",
    "infer_latency_p95_ms": "batch-1 inference latency, 95th percentile",
    "infer_latency_p99_ms": "batch-1 inference latency, 99th percentile",
    "infer_batch_size": "batch size of the inference-throughput calls (trainer.eval_batch_size)",
    "infer_samples_per_s": "inference throughput at infer_batch_size",
    # memory
    "rss_method": "per_phase (peak reset through /proc/self/clear_refs) | cumulative (ru_maxrss since start)",
    "rss_before_train_mb": "process RSS after data load and model build, before training; per process",
    "rss_anon_baseline_mb": "anonymous RSS (RssAnon) right after the framework import and the data load, before "
                            "the model is built; per process",
    "peak_anon_train_mb": "peak anonymous RSS above rss_anon_baseline_mb during the untimed memory phase (training "
                          "steps after the timed windows, sampled by fwbench.bench.memory.AnonPeak): memory that "
                          "the code owns, whatever the page cache holds; claim 3 on the CPU; per process",
    "memory_phase_samples": "readings of the anonymous RSS taken during the memory phase; per process",
    "rss_file_after_train_mb": "file-backed part of the RSS after training (RssFile: mapped libraries and files); "
                               "every total-RSS figure includes it, and its size follows the page cache's state, "
                               "not the code (fwbench.bench.memory); per process",
    "peak_rss_first_step_mb": "peak total RSS during the first step (compilation included); per process",
    "peak_rss_train_mb": "peak total RSS during this window (mapped files included: for reference only)",
    "peak_rss_infer_mb": "peak total RSS during the inference calls after this window",
    "peak_device_train_mb": "peak framework device allocation during training (GPU only)",
    "peak_device_infer_mb": "peak framework device allocation during inference (GPU only)",
    # model
    "parameter_count": "trainable parameters",
    "flops_per_sample": "analytic forward FLOPs per sample (fwbench.models.flops_per_sample)",
    "compile_cache": "torch.compile: inductor FX-graph cache hits/misses in the first step; empty otherwise",
    # environment
    "threads": "threads the job was given",
    "intra_op_threads": "intra-op threads the framework reports",
    "inter_op_threads": "inter-op threads the framework reports",
    "cpu_model": "CPU model name",
    "cpu_count": "logical CPUs of the machine",
    "gpu_model": "GPU name, empty on a CPU",
    "gpu_driver": "NVIDIA driver version, empty when none",
    "framework_version": "TensorFlow (with Keras) or torch version",
    "cuda_version": "CUDA version the framework was built with, empty when none",
    "cudnn_version": "cuDNN version the framework was built with, empty when none",
    "mixed_precision_policy": "Keras dtype policy or torch autocast dtype",
    "hostname": "machine name",
    "background_cpu_share": "CPU time other processes used while the job measured, as a share of the machine (0 = idle)",
    "background_processes": "the other processes (kernel threads included) that used the most CPU time while the job "
                            "measured: 'name (pid N) S s', busiest first; processes that ended meanwhile are not seen",
    "load_avg_start": "1-minute load average when the job started (lags, and counts the previous job)",
    "load_avg_end": "1-minute load average when the job ended (counts the job itself)",
    "job_start_unix": "job start, seconds since the epoch (no two timed jobs may overlap)",
    "job_end_unix": "job end, seconds since the epoch",
    "mlflow_run_id": "MLflow run that bench_table logged for the process of this row (empty in the job's own "
                     "rows file, and when tracking.enabled is false)",
}
RESULT_COLUMNS = tuple(SCHEMA)
# The per-window and per-process measurements (MLflow metrics of a job; the summary's spread).
METRIC_COLUMNS = (
    "train_samples_per_s",
    "first_step_s",
    "infer_latency_p50_ms",
    "infer_latency_p95_ms",
    "infer_latency_p99_ms",
    "infer_samples_per_s",
    "peak_anon_train_mb",
    "peak_rss_first_step_mb",
    "peak_rss_train_mb",
    "peak_rss_infer_mb",
    "peak_device_train_mb",
    "peak_device_infer_mb",
)
# A variant, and one process of it.
GROUP_COLUMNS = ("framework", "model", "mode")
PROCESS_COLUMNS = (*GROUP_COLUMNS, "replicate")


def check_mode(framework: str, mode: str) -> None:
    """One line naming the bad mode and the modes the framework has."""
    if framework not in MODES:
        raise ConfigError(f"framework={framework!r} has no bench modes: accepted are {', '.join(MODES)}")
    if mode not in MODES[framework]:
        raise ConfigError(
            f"bench mode {mode!r} does not exist for framework={framework}: "
            f"accepted are {', '.join(MODES[framework])}"
        )


def job_mode(cfg) -> str:
    """The mode of this job: bench.mode, or the framework's default when it is null."""
    mode = cfg.bench.get("mode") or DEFAULT_MODES.get(cfg.framework.name, "")
    check_mode(cfg.framework.name, mode)
    return mode


def window_steps(cfg, framework: str, model: str, mode: str) -> int:
    """Steps per timed window of one job.

    bench.model_window_steps[model] is either one count for every mode or a
    mapping framework -> mode -> count; whatever it leaves out takes
    bench.window_steps.
    """
    entry = (cfg.bench.get("model_window_steps") or {}).get(model)
    if isinstance(entry, int):
        return entry
    steps = ((entry or {}).get(framework) or {}).get(mode)
    return int(steps if steps is not None else cfg.bench.window_steps)


def check_bench_config(cfg) -> None:
    """Validate the bench group; one line naming the first bad value."""
    bench = cfg.bench
    for framework, modes in bench.modes.items():
        for mode in modes:
            check_mode(framework, mode)
    for framework in cfg.experiment.frameworks:
        if not bench.modes.get(framework):
            raise ConfigError(
                f"bench.modes.{framework} is empty or missing: list at least one of {', '.join(MODES[framework])}"
            )
    for key in ("replicates", "windows", "warmup_steps", "window_steps", "latency_warmup_calls", "latency_calls",
                "inference_calls"):
        _check_positive_int(f"bench.{key}", bench[key])
    for key in ("replicate", "schedule_seed"):
        if not isinstance(bench[key], int) or isinstance(bench[key], bool) or bench[key] < 0:
            raise ConfigError(f"bench.{key}={bench[key]!r} is invalid: accepted is an integer >= 0")
    for model, entry in (bench.get("model_window_steps") or {}).items():
        _check_model_window_steps(f"bench.model_window_steps.{model}", entry)
    from fwbench.models import MODEL_NAMES

    if bench.get("models") is not None:
        for model in bench.models:
            if model not in MODEL_NAMES:
                raise ConfigError(f"bench.models has {model!r}: accepted are {', '.join(MODEL_NAMES)}")
    if bench.control_model not in MODEL_NAMES:
        raise ConfigError(f"bench.control_model={bench.control_model!r} is invalid: accepted are "
                          f"{', '.join(MODEL_NAMES)} (a model the bench measures, or it has no A/A control)")
    if bench.precision not in PRECISIONS:
        raise ConfigError(f"bench.precision={bench.precision!r} is invalid: accepted are {', '.join(PRECISIONS)}")
    for key in ("tf32", "deterministic"):
        if not isinstance(bench[key], bool):
            raise ConfigError(f"bench.{key}={bench[key]!r} is invalid: accepted are true, false")


def _check_model_window_steps(key: str, entry: object) -> None:
    """An integer > 0, or framework -> mode -> integer > 0 with modes the framework has."""
    if not isinstance(entry, Mapping):
        _check_positive_int(key, entry)
        return
    for framework, modes in entry.items():
        if framework not in MODES or not isinstance(modes, Mapping):
            raise ConfigError(
                f"{key}.{framework}={modes!r} is invalid: accepted is an integer > 0, or a mapping "
                f"from {' or '.join(MODES)} to modes and integers > 0"
            )
        for mode, steps in modes.items():
            check_mode(framework, mode)
            _check_positive_int(f"{key}.{framework}.{mode}", steps)


def _check_positive_int(key: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: accepted is an integer > 0")


def bench_models(cfg) -> list[str]:
    """bench.models when set (a shorter grid, e.g. for the smoke experiment), else experiment.models."""
    models = cfg.bench.get("models")
    return list(models) if models is not None else list(cfg.experiment.models)


def bench_grid(cfg) -> list[tuple[str, str, str]]:
    """Every (framework, model, mode) bench variant: experiment.frameworks x models x bench.modes[framework]."""
    return [
        (framework, model, mode)
        for framework in cfg.experiment.frameworks
        for model in bench_models(cfg)
        for mode in cfg.bench.modes[framework]
    ]


def control_variants(cfg) -> list[tuple[str, str, str]]:
    """The A/A control of each framework: its default mode on bench.control_model, where both are benched."""
    if cfg.bench.control_model not in bench_models(cfg):
        return []
    return [
        (framework, cfg.bench.control_model, DEFAULT_MODES[framework])
        for framework in cfg.experiment.frameworks
        if DEFAULT_MODES[framework] in cfg.bench.modes[framework]
    ]


def replicates_of(cfg, variant: tuple[str, str, str]) -> int:
    """bench.replicates processes; a control variant an even number (at least 2), so its arms are equal."""
    replicates = int(cfg.bench.replicates)
    if variant in control_variants(cfg):
        return max(2, replicates + replicates % 2)
    return replicates


@dataclass(frozen=True)
class BenchJob:
    """One timed process: a variant's replicate, at its place in the interleaved order."""

    framework: str
    model: str
    mode: str
    replicate: int
    position: int
    block: int

    @property
    def variant(self) -> tuple[str, str, str]:
        return self.framework, self.model, self.mode


def bench_schedule(cfg) -> list[BenchJob]:
    """The order of every timed process: randomised blocks, seeded by bench.schedule_seed.

    Block k runs replicate k of every variant that has one, in an order drawn
    for that block alone; so every variant's processes spread over the whole
    grid and each framework and mode takes every place in a block alike. The
    same config gives the same order (the draw seeds on schedule_seed and k).
    """
    variants = bench_grid(cfg)
    counts = {variant: replicates_of(cfg, variant) for variant in variants}
    jobs = []
    for block in range(max(counts.values(), default=0)):
        members = [variant for variant in variants if counts[variant] > block]
        random.Random(f"fwbench-schedule:{cfg.bench.schedule_seed}:{block}").shuffle(members)
        for variant in members:
            jobs.append(BenchJob(*variant, replicate=block, position=len(jobs), block=block))
    return jobs


def scheduled_job(cfg, framework: str, model: str, mode: str, replicate: int) -> BenchJob:
    """This process's entry in the schedule; one line naming what the schedule has instead."""
    for job in bench_schedule(cfg):
        if job.variant == (framework, model, mode) and job.replicate == replicate:
            return job
    raise ConfigError(
        f"bench.replicate={replicate} of {framework}/{model}/{mode} is not in the bench schedule: accepted are "
        f"0 to {replicates_of(cfg, (framework, model, mode)) - 1}, for a variant of the bench grid"
    )


def bench_dir(cfg) -> Path:
    return Path(cfg.paths.results) / cfg.experiment.name / cfg.dataset.name / "bench"


def job_rows_path(cfg, framework: str, model: str, mode: str, replicate) -> Path:
    """Where one bench process writes its rows (placeholders work: Snakemake passes wildcards)."""
    return bench_dir(cfg) / framework / model / mode / f"r{replicate}{JOB_ROWS_SUFFIX}"


def job_record_path(cfg, framework: str, model: str, mode: str, replicate) -> Path:
    """Where one bench process writes its record (config and tags) for bench_table's MLflow run."""
    return record_path_of(job_rows_path(cfg, framework, model, mode, replicate))


def record_path_of(rows_path: Path) -> Path:
    """The job record beside a job's rows file."""
    return Path(rows_path).with_suffix(JOB_RECORD_SUFFIX)


def results_path(cfg) -> Path:
    return bench_dir(cfg) / RESULTS_FILE


def summary_path(cfg) -> Path:
    return bench_dir(cfg) / SUMMARY_FILE


def schedule_path(cfg) -> Path:
    return bench_dir(cfg) / SCHEDULE_FILE
