"""The bench grid: variants (framework x model x mode x batch size x threads), their processes and their order.

A variant's setting is its training batch size and its thread count: the
default experiments bench one setting (trainer.batch_size, bench.threads [2]);
a sweep (config/experiment/sweep.yaml) lists several, and every point is a
variant with its own processes, interleaved with all the others.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

from fwbench.errors import ConfigError
from fwbench.frameworks.registry import FRAMEWORKS

# Execution modes per framework, and the mode a user gets without asking (each framework's spec says which).
MODES = {name: spec.modes for name, spec in FRAMEWORKS.items()}
DEFAULT_MODES = {name: spec.default_mode for name, spec in FRAMEWORKS.items()}
PRECISIONS = ("fp32", "bf16")
# bench.threads: an explicit list, or this: powers of two up to the cores the jobs may have.
AUTO_THREADS = "auto"
# bench.infer_batch_size: the inference-throughput calls at trainer.eval_batch_size, or at the variant's batch size.
INFER_BATCH_CHOICES = ("eval", "train")


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


def window_steps(cfg, framework: str, model: str, mode: str, batch_size: int | None = None) -> int:
    """Steps per timed window of one job at `batch_size` (default: bench.window_steps_batch_size).

    bench.model_window_steps[model] is either one count for every mode or a
    mapping framework -> mode -> count; whatever it leaves out takes
    bench.window_steps. Those counts are for bench.window_steps_batch_size;
    another batch size takes the count that keeps the samples per window the
    same, at least 1 and at most bench.max_window_steps and
    max_steps_in_one_epoch (a job never holds more than one epoch of data).
    """
    entry = (cfg.bench.get("model_window_steps") or {}).get(model)
    if isinstance(entry, int):
        steps = entry
    else:
        steps = ((entry or {}).get(framework) or {}).get(mode)
        steps = int(steps if steps is not None else cfg.bench.window_steps)
    reference = int(cfg.bench.window_steps_batch_size)
    if batch_size is None or batch_size == reference:
        return steps
    scaled = round(steps * reference / batch_size)
    return max(1, min(scaled, int(cfg.bench.max_window_steps), max_steps_in_one_epoch(cfg, batch_size)))


def max_steps_in_one_epoch(cfg, batch_size: int) -> int:
    """The most steps per window for which warm-up, the windows, the memory phase (one window's steps) and
    the trailing step take at most one epoch of the training split at `batch_size` (no limit for a dataset
    whose config does not give train_count, such as digits: the bench cycles its samples)."""
    if cfg.dataset.get("train_count") is None:
        return int(cfg.bench.max_window_steps)
    epoch_steps = (int(cfg.dataset.train_count) - int(cfg.dataset.val_size)) // batch_size
    windows = int(cfg.bench.windows) + 1  # the memory phase runs one window's steps
    return max(1, (epoch_steps - int(cfg.bench.warmup_steps) - 1) // windows)


def batch_sizes(cfg) -> list[int]:
    """The bench's training batch sizes: bench.batch_sizes, or [trainer.batch_size] when it is null."""
    listed = cfg.bench.get("batch_sizes")
    return [int(size) for size in listed] if listed is not None else [int(cfg.trainer.batch_size)]


def auto_threads(cores: int) -> list[int]:
    """Powers of two up to `cores`: 1, 2, 4, ..."""
    return [2 ** power for power in range(int(math.log2(max(1, cores))) + 1)]


def thread_counts(cfg, cores: int | None = None) -> list[int]:
    """bench.threads as a list; `auto` expands to powers of two up to `cores` (default: this machine's CPUs).

    The workflow expands `auto` once and hands every job the list (rules/common.smk), so a job on another
    machine sees the same grid.
    """
    listed = cfg.bench.threads
    if listed == AUTO_THREADS:
        return auto_threads(cores or os.cpu_count() or 1)
    return [int(count) for count in listed]


def reference_setting(cfg) -> tuple[int, int]:
    """The setting the report's main tables and claims use: trainer.batch_size at the most threads benched."""
    return int(cfg.trainer.batch_size), max(thread_counts(cfg))


def check_settings(cfg, cores: int | None) -> None:
    """Batch sizes and thread counts: integers > 0, trainer.batch_size among the batch sizes, no more threads
    than `cores` (the cores a job may have; None: not known here, as on a cluster). One line naming the value."""
    for size in cfg.bench.get("batch_sizes") or []:
        _check_count("bench.batch_sizes", size)
    listed = cfg.bench.threads
    if listed != AUTO_THREADS:
        if isinstance(listed, (str, int)) or not len(listed):
            raise ConfigError(f"bench.threads={listed!r} is invalid: accepted are a list of integers > 0, "
                              f"e.g. [1, 2], or {AUTO_THREADS} (powers of two up to the cores)")
        for count in listed:
            _check_count("bench.threads", count)
    if int(cfg.trainer.batch_size) not in batch_sizes(cfg):
        raise ConfigError(f"bench.batch_sizes={batch_sizes(cfg)} lacks trainer.batch_size={cfg.trainer.batch_size}: "
                          "the report's main claims are judged at it; add it to the list")
    if cores is not None:
        for count in thread_counts(cfg, cores):
            if count > cores:
                raise ConfigError(f"bench.threads has {count}, more than the {cores} cores a job may have here: "
                                  f"accepted are 1 to {cores}; give Snakemake more (--cores) or list fewer "
                                  f"(overrides=\"bench.threads=[1]\")")


def _check_count(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key} has {value!r}: accepted are integers > 0")


def bench_models(cfg) -> list[str]:
    """bench.models when set (a shorter grid, e.g. for the smoke experiment), else experiment.models."""
    models = cfg.bench.get("models")
    return list(models) if models is not None else list(cfg.experiment.models)


def bench_frameworks(cfg) -> list[str]:
    """bench.frameworks when set (arms benched but not trained, as in `default`), else experiment.frameworks."""
    listed = cfg.bench.get("frameworks")
    return list(listed) if listed is not None else list(cfg.experiment.frameworks)


def bench_only_frameworks(cfg) -> list[str]:
    """The arms benched but not trained: speed and memory rows, no accuracy or export rows."""
    return [framework for framework in bench_frameworks(cfg) if framework not in cfg.experiment.frameworks]


def all_frameworks(cfg) -> list[str]:
    """Every arm the experiment trains or benches: experiment.frameworks, then the arms only benched."""
    return [*cfg.experiment.frameworks, *bench_only_frameworks(cfg)]


Variant = tuple  # (framework, model, mode, batch size, threads)


def modes_of(cfg, framework: str, model: str) -> list[str]:
    """The modes a model is benched in on a framework: bench.model_modes[model] where it lists the model
    (a framework it does not name: none), else bench.modes[framework]."""
    own = (cfg.bench.get("model_modes") or {}).get(model)
    if own is not None:
        return list(own.get(framework) or [])
    return list(cfg.bench.modes[framework])


def bench_grid(cfg) -> list[Variant]:
    """Every (framework, model, mode, batch size, threads) bench variant: bench frameworks x models x
    their modes (modes_of) x batch sizes x thread counts."""
    sizes, counts = batch_sizes(cfg), thread_counts(cfg)
    return [
        (framework, model, mode, batch_size, threads)
        for framework in bench_frameworks(cfg)
        for model in bench_models(cfg)
        for mode in modes_of(cfg, framework, model)
        for batch_size in sizes
        for threads in counts
    ]


def control_variants(cfg) -> list[Variant]:
    """The A/A control of each framework: its default mode on bench.control_model at the reference setting,
    where both are benched."""
    if cfg.bench.control_model not in bench_models(cfg):
        return []
    return [
        (framework, cfg.bench.control_model, DEFAULT_MODES[framework], *reference_setting(cfg))
        for framework in bench_frameworks(cfg)
        if DEFAULT_MODES[framework] in cfg.bench.modes[framework]
    ]


def replicates_of(cfg, variant: Variant) -> int:
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
    batch_size: int
    threads: int
    replicate: int
    position: int
    block: int

    @property
    def variant(self) -> Variant:
        return self.framework, self.model, self.mode, self.batch_size, self.threads


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


def scheduled_job(cfg, variant: Variant, replicate: int) -> BenchJob:
    """This process's entry in the schedule; one line naming what the schedule has instead."""
    for job in bench_schedule(cfg):
        if job.variant == tuple(variant) and job.replicate == replicate:
            return job
    name = "/".join(str(part) for part in variant)
    if tuple(variant) not in bench_grid(cfg):
        raise ConfigError(f"{name} (framework/model/mode/batch size/threads) is not a variant of the bench grid: "
                          f"accepted are {', '.join(str(size) for size in batch_sizes(cfg))} for the batch size "
                          f"(trainer.batch_size) and {thread_counts(cfg)} for threads, with the experiment's "
                          f"frameworks, models and bench.modes")
    raise ConfigError(
        f"bench.replicate={replicate} of {name} is not in the bench schedule: accepted are "
        f"0 to {replicates_of(cfg, variant) - 1}"
    )
