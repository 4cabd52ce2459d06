"""Keras 3 on the JAX backend (the `keras_jax` arm): the project's Keras models and `fit`, run by JAX.

Beside the `jax` arm (Flax and Optax under `jax.jit`) it measures what Keras
costs on JAX. The runtime (CPUs, seed, precision, device memory) is JAX's
(fwbench.frameworks.jax_runtime, shared with the `jax` arm); the model, adapter and saved model are Keras'
(fwbench.frameworks.keras_arm). One mode, jit (`jit_compile=True`, Keras'
default on JAX: its train step under `jax.jit`).

Export: none of its own; the deployable JAX format is the `jax` arm's
`jax.export`, measured there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fwbench.frameworks import keras_backend

keras = keras_backend.import_keras_for("keras_jax")  # before anything imports Keras

import jax  # noqa: E402

from fwbench.frameworks import jax_runtime, keras_arm  # noqa: E402
from fwbench.frameworks.jax_runtime import (  # noqa: E402  (JAX's runtime half, shared with the jax arm)
    applied_threads,
    compile_cache_note,
    determinism_enabled,
    device,
    device_peak_mb,
    gpu_build,
    has_gpu,
    prepare_process,
    reset_device_peak,
    tf32_flags,
)
from fwbench.frameworks.keras_arm import (  # noqa: E402  (Keras' half of the interface)
    before_build,
    build_model,
    mixed_precision_policy,
    mlflow_model,
    predictor,
    set_mode_switches,
)

__all__ = [
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
]


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """JAX's runtime, then Keras' seed (its layers' SeedGenerators draw from it)."""
    jax_runtime.configure(threads, seed, tf32, deterministic)
    keras.utils.set_random_seed(seed)


def version() -> str:
    return f"jax {jax.__version__}, keras {keras.__version__}"


class Adapter(keras_arm.Adapter):
    framework = "keras_jax"

    @property
    def device(self) -> str:
        return device()


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    return keras_arm.load_logits(model_dir), device()


def apply_mode(adapter, mode: str, precision: str) -> None:
    set_mode_switches(adapter, run_eagerly=False, jit_compile=True)


def sync() -> Callable[[], None]:
    """JAX dispatches asynchronously: a clock read waits for the outputs of the last step Keras reported."""
    return wait_for_last_step


def wait_for_last_step() -> None:
    if keras_arm.last_step_logs:
        jax.block_until_ready(keras_arm.last_step_logs.pop())
