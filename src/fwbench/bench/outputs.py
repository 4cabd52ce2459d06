"""What the bench writes, and where: file names, paths and the tidy table's columns."""

from __future__ import annotations

from pathlib import Path

RESULTS_FILE = "bench_results.csv"
SUMMARY_FILE = "bench_summary.csv"
SCHEDULE_FILE = "bench_schedule.csv"
JOB_ROWS_SUFFIX = ".csv"
# Beside each job's rows: the job's resolved config and its rule, log and SLURM job, from which
# bench_table logs the job's MLflow run (a bench process does not import MLflow).
JOB_RECORD_SUFFIX = ".job.yaml"

# The tidy table: one row per framework x model x mode x batch size x threads x replicate x window.
# Process-level values (first step, memory, environment) repeat on every window
# row of the process. NaN where a value does not apply (device memory on a CPU).
# The report reads these names.
SCHEMA = {
    # identity
    "experiment": "experiment name (config experiment.name)",
    "dataset": "dataset name (the model's own where experiment.model_datasets gives it one)",
    "synthetic": "true where the dataset's arrays are synthetic (seeded, of the real shapes): speed and memory only",
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
    "flops_per_sample": "analytic forward FLOPs per sample (fwbench.models.architecture.flops_per_sample)",
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
    "steal_cpu_share": "the hypervisor's steal time while the job measured (other guests on this machine's CPUs), "
                       "as a share of the machine; 0 on bare metal",
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
# A variant's setting, the variant, and one process of it.
SETTING_COLUMNS = ("batch_size", "threads")
GROUP_COLUMNS = ("framework", "model", "mode", *SETTING_COLUMNS)
PROCESS_COLUMNS = (*GROUP_COLUMNS, "replicate")


def bench_dir(cfg) -> Path:
    """The experiment's bench files, under its dataset (experiment.dataset), whatever dataset a model reads."""
    return Path(cfg.paths.results) / cfg.experiment.name / cfg.experiment.dataset / "bench"


def job_rows_path(cfg, framework: str, model: str, mode: str, batch_size, threads, replicate) -> Path:
    """Where one bench process writes its rows (placeholders work: Snakemake passes wildcards)."""
    return bench_dir(cfg) / framework / model / mode / f"b{batch_size}-t{threads}" / f"r{replicate}{JOB_ROWS_SUFFIX}"


def job_record_path(cfg, framework: str, model: str, mode: str, batch_size, threads, replicate) -> Path:
    """Where one bench process writes its record (config and tags) for bench_table's MLflow run."""
    return record_path_of(job_rows_path(cfg, framework, model, mode, batch_size, threads, replicate))


def record_path_of(rows_path: Path) -> Path:
    """The job record beside a job's rows file."""
    return Path(rows_path).with_suffix(JOB_RECORD_SUFFIX)


def results_path(cfg) -> Path:
    return bench_dir(cfg) / RESULTS_FILE


def summary_path(cfg) -> Path:
    return bench_dir(cfg) / SUMMARY_FILE


def schedule_path(cfg) -> Path:
    return bench_dir(cfg) / SCHEDULE_FILE
