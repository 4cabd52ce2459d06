"""TensorFlow/Keras side of a bench job: modes, precision, sync, inference, device memory.

The adapter (fwbench.training.keras_adapter) is the pipeline's: `fit` on
in-memory arrays. A mode only flips the two switches Keras reads when it
builds its train and predict functions (at the first `fit`/`predict_on_batch`):
eager = `run_eagerly=True`; graph = a tf.function without XLA; xla =
`jit_compile=True`. Both are set explicitly: Keras' default `jit_compile="auto"`
means XLA on a GPU and no XLA on a CPU, so "the default" is not one mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from fwbench.bench.timing import no_sync
from fwbench.errors import ConfigError
from fwbench.runtime import enable_tf_memory_growth

GPU_DEVICE = "GPU:0"
BYTES_PER_MIB = 1 << 20
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def prepare_process() -> None:
    """Before any op: memory growth on, so the peak allocation means something."""
    enable_tf_memory_growth()


def before_build(precision: str) -> str:
    """Keras reads the dtype policy when layers are built: set it first. Returns the policy."""
    policy = POLICIES[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def apply_mode(adapter, mode: str, precision: str) -> None:
    """Precision was set before the build (before_build); only the mode switches remain."""
    model = adapter.model
    model.run_eagerly = mode == "eager"
    model.jit_compile = mode == "xla"
    # Keras quietly falls back to no XLA (a layer without XLA support, or op determinism on): refuse instead.
    if bool(model.jit_compile) != (mode == "xla"):
        raise ConfigError(
            f"bench mode 'xla' is not available for model {model.name!r} here: Keras will not XLA-compile it "
            f"(with bench.deterministic=true it never does): accepted is bench.deterministic=false"
        )


def sync() -> Callable[[], None]:
    """On a GPU, wait for queued device work before a clock read."""
    return tf.test.experimental.sync_devices if has_gpu() else no_sync


def predictor(adapter) -> Callable[[np.ndarray], np.ndarray]:
    """NumPy in, NumPy out, through the model's predict function in the job's mode.

    `predict_on_batch` is Keras' call for one batch; it returns NumPy, so the
    result is on the host (synchronized) when it returns.
    """
    model = adapter.model
    return model.predict_on_batch


def reset_device_peak() -> None:
    if has_gpu():
        tf.config.experimental.reset_memory_stats(GPU_DEVICE)


def device_peak_mb() -> float:
    if not has_gpu():
        return math.nan
    return tf.config.experimental.get_memory_info(GPU_DEVICE)["peak"] / BYTES_PER_MIB


def compile_cache_note() -> str:
    """XLA keeps no compilation cache across processes by default: nothing to report."""
    return ""
