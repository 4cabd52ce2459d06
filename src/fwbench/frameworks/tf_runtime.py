"""TensorFlow's runtime, shared by both TensorFlow arms (tf: Keras on TF; tf_native: no Keras).

Threads, seeds, TF32, determinism and reading them back; GPU memory growth and
peaks; the SavedModel reload that both arms' export is measured by. Nothing
here imports Keras.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fwbench.runtime import imports_refused

# TensorFlow imports Keras, and Keras' Orbax callback imports JAX whenever it is installed
# (0.75 s and its memory): refused, Keras takes JAX as absent.
with imports_refused(("jax",)):
    import tensorflow as tf

from fwbench.bench.timing import no_sync
from fwbench.units import BYTES_PER_MIB

GPU_DEVICE = "GPU:0"


def configure_runtime(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """Threads, seeds, determinism and TF32; before TensorFlow runs its first op (it fixes its thread pools then)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    enable_memory_growth()
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    # The three RNGs keras.utils.set_random_seed seeds, without importing Keras.
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    set_determinism(deterministic)


def set_determinism(enabled: bool) -> None:
    """TensorFlow op determinism on or off (Keras never XLA-compiles while it is on)."""
    # TensorFlow has a public switch on; the switch off is only in this module.
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def enable_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as it needs it instead of reserving it all.

    Without it TF grabs nearly the whole GPU at start-up and its peak allocation
    says nothing about the model. Must run before TF initializes the GPU.
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def applied_threads() -> dict[str, int]:
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def gpu_build() -> dict[str, str]:
    """GPU model, and the CUDA and cuDNN versions TensorFlow was built with; empty strings where none."""
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    model = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "") if gpus else ""
    return {"gpu_model": str(model), "cuda_version": str(build.get("cuda_version", "") or ""),
            "cudnn_version": str(build.get("cudnn_version", "") or "")}


def tf32_flags() -> dict[str, bool]:
    tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    # One switch covers matmul and convolution in TensorFlow.
    return {"tf32_matmul": tf32, "tf32_conv": tf32}


def determinism_enabled() -> bool:
    # TensorFlow exposes the setter publicly, the getter only here.
    from tensorflow.python.framework import config as tf_config

    return bool(tf_config.is_op_determinism_enabled())


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def device() -> str:
    """Where TensorFlow places the model's ops: the first GPU when it sees one."""
    return "cuda" if tf.config.list_logical_devices("GPU") else "cpu"


def prepare_process() -> None:
    """Before any op: memory growth on, so the peak allocation means something."""
    enable_memory_growth()


def sync() -> Callable[[], None]:
    """On a GPU, wait for queued device work before a clock read."""
    return tf.test.experimental.sync_devices if has_gpu() else no_sync


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


def reload_saved_model(target: Path, sample: np.ndarray):
    """Load a SavedModel with `tf.saved_model.load` (what TF Serving and the TFLite converters take), timed.

    Returns (path, load seconds, first-prediction seconds at batch 1, a batch predict function).
    """
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(target))
    load_time = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(loaded.serve(tf.constant(sample[:1])))
    first_prediction = time.perf_counter() - start
    return target, load_time, first_prediction, lambda batch: np.asarray(loaded.serve(tf.constant(batch)))
