"""Keras 3 on the PyTorch backend (the `keras_torch` arm): the project's Keras models and `fit`, run by torch.

Beside the `torch` arm (a plain PyTorch loop) it measures what Keras costs on
torch. The runtime (threads, seeds, determinism, device memory) is torch's own
(fwbench.frameworks.torch); the model, adapter and saved model are Keras'
(fwbench.frameworks.keras_arm). Modes: eager (Keras' torch trainer without
compilation, its default on torch) and compile (`jit_compile=True`, which
Keras' torch backend runs through `torch.compile`).

Export: none. Keras' SavedModel export needs the TensorFlow or JAX backend;
the deployable format of a torch model is the `torch` arm's `torch.export`,
measured there.
"""

from __future__ import annotations

from pathlib import Path

from fwbench.frameworks import keras_backend

keras = keras_backend.import_keras_for("keras_torch")  # before anything imports Keras

import torch  # noqa: E402

from fwbench.frameworks import keras_arm  # noqa: E402
from fwbench.frameworks import torch as torch_arm  # noqa: E402
from fwbench.frameworks.keras_arm import (  # noqa: E402  (Keras' half of the interface)
    before_build,
    build_model,
    mixed_precision_policy,
    mlflow_model,
    predictor,
    set_mode_switches,
)
from fwbench.frameworks.torch import (  # noqa: E402  (torch's runtime half)
    applied_threads,
    compile_cache_note,
    determinism_enabled,
    device_peak_mb,
    gpu_build,
    has_gpu,
    prepare_process,
    reset_device_peak,
    sync,
    tf32_flags,
)

__all__ = [
    "configure", "applied_threads", "version", "gpu_build", "tf32_flags", "determinism_enabled", "has_gpu",
    "build_model", "Adapter", "load_logits_fn", "prepare_process", "before_build", "apply_mode",
    "mixed_precision_policy", "sync", "predictor", "reset_device_peak", "device_peak_mb", "compile_cache_note",
    "mlflow_model",
]


def configure(threads: int, seed: int, tf32: bool, deterministic: bool) -> None:
    """torch's runtime, then Keras' seed (its layers' SeedGenerators draw from it)."""
    torch_arm.configure(threads, seed, tf32, deterministic)
    keras.utils.set_random_seed(seed)


def version() -> str:
    return f"torch {torch.__version__}, keras {keras.__version__}"


def device() -> str:
    return "cuda" if has_gpu() else "cpu"


class Adapter(keras_arm.Adapter):
    framework = "keras_torch"

    @property
    def device(self) -> str:
        return device()


def load_logits_fn(model_dir: Path, model_cfg, input_shape, num_classes: int):
    return keras_arm.load_logits(model_dir), device()


def apply_mode(adapter, mode: str, precision: str) -> None:
    set_mode_switches(adapter, run_eagerly=False, jit_compile=mode == "compile")
