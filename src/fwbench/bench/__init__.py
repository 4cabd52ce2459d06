"""Speed and memory runs: one bench job per framework x model x execution mode.

A job (scripts/bench.py, `run.bench_variant`) trains with the pipeline's own
adapters (Keras `fit` on in-memory arrays; the torch adapter's loop over
pre-loaded tensors) with the trainer config the training runs use, and measures:

- training throughput (samples/s) over windows of `window_steps` steps each,
  after `warmup_steps` untimed steps: with `steady_cv`, windows until the last
  `trials` of them agree (throughput CV <= steady_cv) or `max_windows` came;
  the trials are those last windows (timing.TrainingPlan);
- time to the end of the first step (tracing and compilation), on its own;
- inference latency at batch 1 (p50/p95/p99 over `latency_calls` calls) and
  inference throughput at `trainer.eval_batch_size`;
- peak memory per phase: the process's peak RSS (reset per phase through
  /proc/self/clear_refs) and, on a GPU, the framework's peak device allocation;
- parameter count and analytic forward FLOPs per sample.

It writes one CSV row per trial (RESULT_COLUMNS below); `aggregate` joins every
job's rows into bench_results.csv (the tidy table the report reads) and a
median/IQR summary. This module stays free of TensorFlow, torch and pandas:
rules/common.smk imports it to build the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
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
JOB_ROWS_SUFFIX = ".csv"
# Beside each job's rows: the job's resolved config and its rule, log and SLURM job, from which
# bench_table logs the job's MLflow run (a bench process does not import MLflow).
JOB_RECORD_SUFFIX = ".job.yaml"

# The tidy table: one row per framework x model x mode x trial. Job-level values
# (first step, environment) repeat on every trial row of the job. NaN where a
# value does not apply (device memory on a CPU). The report reads these names.
SCHEMA = {
    # identity
    "experiment": "experiment name (config experiment.name)",
    "dataset": "dataset name",
    "framework": "tf | torch",
    "model": "model name (config/model)",
    "mode": "execution mode, see MODES",
    "trial": "trial index, 0-based: trial t is the job's (windows_timed - trials + t)-th window",
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
    "trials": "trials in the job: its last timed windows",
    "steady_cv": "bench.steady_cv: the job timed windows until its last `trials` had at most this throughput CV "
                 "(or bench.max_windows came first); NaN = exactly `trials` windows",
    "windows_timed": "training windows the job timed (the trials are the last of them)",
    # training
    "train_samples_per_s": "training throughput over this trial's window",
    "train_window_s": "wall time of this trial's window",
    "first_step_s": "from calling the training entry point to the end of the first step (tracing, compilation); per job",
    # inference
    "latency_calls": "batch-1 inference calls timed in this trial",
    "infer_latency_p50_ms": "batch-1 inference latency, median of this trial's calls",
    "infer_latency_p95_ms": "batch-1 inference latency, 95th percentile",
    "infer_latency_p99_ms": "batch-1 inference latency, 99th percentile",
    "infer_batch_size": "batch size of the inference-throughput calls (trainer.eval_batch_size)",
    "infer_samples_per_s": "inference throughput at infer_batch_size",
    # memory
    "rss_method": "per_phase (peak reset through /proc/self/clear_refs) | cumulative (ru_maxrss since start)",
    "rss_before_train_mb": "process RSS after data load and model build, before training; per job",
    "rss_file_after_train_mb": "file-backed part of the RSS after training (RssFile: mapped libraries and files); "
                               "every RSS figure includes it, and its size follows the page cache's state, not the "
                               "code (fwbench.bench.memory); per job",
    "peak_rss_first_step_mb": "peak RSS during the first step (compilation included); per job",
    "peak_rss_train_mb": "peak RSS during this trial's training window",
    "peak_rss_infer_mb": "peak RSS during this trial's inference calls",
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
    "mlflow_run_id": "MLflow run that bench_table logged for the job of this row (empty in the job's own "
                     "rows file, and when tracking.enabled is false)",
}
RESULT_COLUMNS = tuple(SCHEMA)
# What the summary aggregates (median and IQR over trials).
METRIC_COLUMNS = (
    "train_samples_per_s",
    "first_step_s",
    "infer_latency_p50_ms",
    "infer_latency_p95_ms",
    "infer_latency_p99_ms",
    "infer_samples_per_s",
    "peak_rss_first_step_mb",
    "peak_rss_train_mb",
    "peak_rss_infer_mb",
    "peak_device_train_mb",
    "peak_device_infer_mb",
)
GROUP_COLUMNS = ("framework", "model", "mode")


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
    for key in ("trials", "warmup_steps", "window_steps", "latency_warmup_calls", "latency_calls", "inference_calls"):
        _check_positive_int(f"bench.{key}", bench[key])
    _check_steady_state(bench)
    for model, entry in (bench.get("model_window_steps") or {}).items():
        _check_model_window_steps(f"bench.model_window_steps.{model}", entry)
    if bench.get("models") is not None:
        from fwbench.models import MODEL_NAMES

        for model in bench.models:
            if model not in MODEL_NAMES:
                raise ConfigError(f"bench.models has {model!r}: accepted are {', '.join(MODEL_NAMES)}")
    if bench.precision not in PRECISIONS:
        raise ConfigError(f"bench.precision={bench.precision!r} is invalid: accepted are {', '.join(PRECISIONS)}")
    for key in ("tf32", "deterministic"):
        if not isinstance(bench[key], bool):
            raise ConfigError(f"bench.{key}={bench[key]!r} is invalid: accepted are true, false")


def _check_steady_state(bench) -> None:
    """steady_cv: null (exactly `trials` windows) or a share in (0, 1); then max_windows >= trials >= 2."""
    steady_cv = bench.steady_cv
    if steady_cv is None:
        return
    if not isinstance(steady_cv, (int, float)) or isinstance(steady_cv, bool) or not 0 < steady_cv < 1:
        raise ConfigError(f"bench.steady_cv={steady_cv!r} is invalid: accepted are null and a share in (0, 1), e.g. 0.05")
    if bench.trials < 2:
        raise ConfigError(f"bench.trials={bench.trials} with bench.steady_cv set: accepted are trials >= 2 "
                          f"(a CV needs two windows), or bench.steady_cv=null")
    max_windows = bench.max_windows
    if not isinstance(max_windows, int) or isinstance(max_windows, bool) or max_windows < bench.trials:
        raise ConfigError(f"bench.max_windows={max_windows!r} is invalid: accepted is an integer >= "
                          f"bench.trials ({bench.trials})")


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
    """Every (framework, model, mode) bench job: experiment.frameworks x models x bench.modes[framework]."""
    return [
        (framework, model, mode)
        for framework in cfg.experiment.frameworks
        for model in bench_models(cfg)
        for mode in cfg.bench.modes[framework]
    ]


def bench_dir(cfg) -> Path:
    return Path(cfg.paths.results) / cfg.experiment.name / cfg.dataset.name / "bench"


def job_rows_path(cfg, framework: str, model: str, mode: str) -> Path:
    """Where one bench job writes its rows (placeholders work: Snakemake passes wildcards)."""
    return bench_dir(cfg) / framework / model / f"{mode}{JOB_ROWS_SUFFIX}"


def job_record_path(cfg, framework: str, model: str, mode: str) -> Path:
    """Where one bench job writes its record (config and tags) for bench_table's MLflow run."""
    return record_path_of(job_rows_path(cfg, framework, model, mode))


def record_path_of(rows_path: Path) -> Path:
    """The job record beside a job's rows file."""
    return Path(rows_path).with_suffix(JOB_RECORD_SUFFIX)


def results_path(cfg) -> Path:
    return bench_dir(cfg) / RESULTS_FILE


def summary_path(cfg) -> Path:
    return bench_dir(cfg) / SUMMARY_FILE
