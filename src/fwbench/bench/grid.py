"""The bench grid: variants (framework x model x mode), their processes and the order they run in."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fwbench.errors import ConfigError
from fwbench.frameworks.registry import FRAMEWORKS

# Execution modes per framework, and the mode a user gets without asking (each framework's spec says which).
MODES = {name: spec.modes for name, spec in FRAMEWORKS.items()}
DEFAULT_MODES = {name: spec.default_mode for name, spec in FRAMEWORKS.items()}
PRECISIONS = ("fp32", "bf16")


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
