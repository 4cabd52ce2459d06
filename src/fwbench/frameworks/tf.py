"""TensorFlow with Keras 3 (the `tf` arm): Keras' `fit` on the TensorFlow backend.

- runtime: TensorFlow's (fwbench.frameworks.tf_runtime), plus Keras' seed;
- the model, the training adapter, the saved .keras model, precision and the
  MLflow flavour: Keras' own, shared by every Keras arm (fwbench.frameworks.keras_arm);
- export: a SavedModel via Keras 3's `model.export`, reloaded with
  `tf.saved_model.load` (what TF Serving and the TFLite converters take);
- the bench modes.

A bench mode only flips the two switches Keras reads when it builds its train
and predict functions (at the first `fit`/`predict_on_batch`): eager =
`run_eagerly=True`; graph = a tf.function without XLA; xla =
`jit_compile=True`. Both are set explicitly: Keras' default
`jit_compile="auto"` means XLA on a GPU and no XLA on a CPU, so "the default"
is not one mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fwbench.errors import ConfigError
from fwbench.frameworks import keras_backend

keras = keras_backend.import_keras_for("tf")  # before anything imports Keras

import tensorflow as tf  # noqa: E402

from fwbench.frameworks import keras_arm  # noqa: E402
from fwbench.frameworks.keras_arm import (  # noqa: E402  (Keras' half of the interface)
    MODEL_FILE,
    before_build,
    build_model,
    mixed_precision_policy,
    mlflow_model,
    predictor,
    set_mode_switches,
)
from fwbench.frameworks.tf_runtime import (  # noqa: E402  (the runtime half, shared with tf_native)
    applied_threads,
    compile_cache_note,
    configure_runtime,
    determinism_enabled,
    device,
    device_peak_mb,
    gpu_build,
    has_gpu,
    prepare_process,
    reload_saved_model,
    reset_device_peak,
    sync,
    tf32_flags,
)

# The interface (docs/frameworks.md): what registry.load("tf") callers use, defined here or imported above.
__all__ = [
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "export", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
]


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """TensorFlow's runtime (tf_runtime), then Keras' own seed, which its layers' SeedGenerators draw from."""
    configure_runtime(threads, seed, tf32, deterministic)
    keras.utils.set_random_seed(seed)


def version() -> str:
    return f"tensorflow {tf.__version__}, keras {keras.__version__}"


class Adapter(keras_arm.Adapter):
    framework = "tf"

    @property
    def device(self) -> str:
        return device()


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    """The saved .keras model as a function (NHWC arrays, batch size) -> logits, and its device."""
    return keras_arm.load_logits(model_dir), device()


def export(model_dir: Path, target: Path, sample: np.ndarray, model_cfg, num_classes: int):
    """A SavedModel via Keras 3's `model.export`, reloaded with `tf.saved_model.load`.

    Returns (path, load seconds, first-prediction seconds at batch 1, a batch predict function).
    """
    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return reload_saved_model(target, sample)


def apply_mode(adapter, mode: str, precision: str) -> None:
    """Precision was set before the build (before_build); only the mode switches remain."""
    set_mode_switches(adapter, run_eagerly=mode == "eager", jit_compile=mode == "xla")
    model = adapter.model
    # Keras quietly falls back to no XLA (a layer without XLA support, or op determinism on): refuse instead.
    if bool(model.jit_compile) != (mode == "xla"):
        raise ConfigError(
            f"bench mode 'xla' is not available for model {model.name!r} here: Keras will not XLA-compile it "
            f"(with bench.deterministic=true it never does): accepted is bench.deterministic=false"
        )
