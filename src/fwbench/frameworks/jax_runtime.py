"""JAX's runtime, shared by both JAX arms (jax: Flax and Optax; keras_jax: Keras on JAX).

The CPUs XLA may use (its CPU thread pool sizes itself from the process's CPU
affinity, so `threads` pins the process to that many CPUs before the backend
starts), the seed, matmul precision, determinism, and reading them back;
device memory. Nothing here imports Flax, Optax or Keras.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from fwbench.units import BYTES_PER_MIB

# XLA on a GPU reserves most of the memory at start-up unless told not to; its peak then means nothing.
NO_PREALLOCATION = ("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
_configured = {"seed": 0}


def configured_seed() -> int:
    """The seed `configure` was given: JAX has no global RNG, so the arms derive their keys from it."""
    return _configured["seed"]


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """CPUs, seed and matmul precision; before JAX's backend starts (at its first computation).

    `deterministic`: XLA on the CPU runs the same program the same way; on a GPU
    the flag --xla_gpu_deterministic_ops would be needed, set here through XLA_FLAGS.
    """
    prepare_process()
    if deterministic:
        flags = os.environ.get("XLA_FLAGS", "")
        if "--xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    # TF32 only matters on NVIDIA GPUs: "highest" is strict fp32, "default" lets XLA use TF32 there.
    jax.config.update("jax_default_matmul_precision", "default" if tf32 else "highest")
    np.random.seed(seed)
    _configured["seed"] = int(seed)


def applied_threads() -> dict[str, int]:
    """XLA's CPU thread pool takes one thread per CPU the process may run on."""
    cpus = len(os.sched_getaffinity(0))
    return {"intra_op": cpus, "inter_op": cpus}


def has_gpu() -> bool:
    return any(d.platform == "gpu" for d in jax.devices())


def gpu_build() -> dict[str, str]:
    """GPU model; JAX does not report the CUDA and cuDNN versions it was built with (empty strings)."""
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    return {"gpu_model": gpus[0].device_kind if gpus else "", "cuda_version": "", "cudnn_version": ""}


def tf32_flags() -> dict[str, bool]:
    tf32 = jax.config.jax_default_matmul_precision != "highest"
    return {"tf32_matmul": tf32, "tf32_conv": tf32}


def determinism_enabled() -> bool:
    """On the CPU XLA is deterministic; on a GPU, whether XLA_FLAGS asks for deterministic ops."""
    return not has_gpu() or "--xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")


def device() -> str:
    return "cuda" if has_gpu() else "cpu"


def prepare_process() -> None:
    name, value = NO_PREALLOCATION
    os.environ.setdefault(name, value)


def reset_device_peak() -> None:
    """JAX cannot reset a device's peak: device_peak_mb is the process's peak so far."""


def device_peak_mb() -> float:
    if not has_gpu():
        return math.nan
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", math.nan) / BYTES_PER_MIB


def compile_cache_note() -> str:
    """JAX's persistent compilation cache is off unless configured: nothing to report."""
    return ""
