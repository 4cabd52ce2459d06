"""Deployment check (the article's claim 5): export each trained model to its
framework's deployable format, reload it, and measure what can be measured.

- TensorFlow: a SavedModel via Keras 3's `model.export` (what TF Serving and
  TFLite converters take), reloaded with `tf.saved_model.load`.
- PyTorch: an ExportedProgram via `torch.export` saved as .pt2 (the format
  PyTorch's deployment paths, AOTInductor and ExecuTorch, start from), reloaded
  with `torch.export.load`.

Measured: exported size on disk, load time, latency of the first prediction
after loading (batch 1), and prediction parity: the fraction of test samples
whose predicted class is the same as the trained model's. Load and first
prediction are timed in the evaluating process, after the framework is imported.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

EXPORT_DIR = "export"
FORMATS = {"tf": "tf_saved_model", "torch": "torch_export_pt2"}
BYTES_PER_MB = 1024 * 1024


def directory_size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / BYTES_PER_MB


def _export_tf(model_dir: Path, target: Path, sample: np.ndarray):
    import keras
    import tensorflow as tf

    from fwbench.training.keras_adapter import MODEL_FILE

    model = keras.models.load_model(Path(model_dir) / MODEL_FILE)
    model.export(str(target), format="tf_saved_model", verbose=False)
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(target))
    load_time = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(loaded.serve(tf.constant(sample[:1])))
    first_prediction = time.perf_counter() - start

    def predict(x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.concatenate([
            np.asarray(loaded.serve(tf.constant(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)
        ])

    return target, load_time, first_prediction, predict


def _export_torch(model_dir: Path, target: Path, sample: np.ndarray, model_name: str, num_classes: int):
    import torch

    from fwbench.training.torch_adapter import MODEL_FILE, to_nchw
    from fwbench.models.torch_models import build_torch_model

    device = torch.device("cpu")
    model = build_torch_model(model_name, tuple(sample.shape[1:]), num_classes)
    model.load_state_dict(torch.load(Path(model_dir) / MODEL_FILE, map_location=device))
    model.eval()
    example = to_nchw(sample[:2], device)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "model.pt2"
    torch.export.save(program, archive)
    start = time.perf_counter()
    loaded = torch.export.load(archive).module()
    load_time = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        loaded(to_nchw(sample[:1], device))
    first_prediction = time.perf_counter() - start

    @torch.no_grad()
    def predict(x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.concatenate([
            loaded(to_nchw(x[i:i + batch_size], device)).numpy() for i in range(0, len(x), batch_size)
        ])

    return target, load_time, first_prediction, predict


def export_and_reload(
    framework: str, model_name: str, model_dir: Path, out_dir: Path,
    x_test: np.ndarray, reference_logits: np.ndarray, num_classes: int, batch_size: int,
) -> dict:
    """Export, reload, and compare the reloaded model's predicted classes with the trained model's."""
    target = Path(out_dir) / EXPORT_DIR
    shutil.rmtree(target, ignore_errors=True)
    if framework == "tf":
        path, load_time, first_prediction, predict = _export_tf(model_dir, target, x_test)
    else:
        path, load_time, first_prediction, predict = _export_torch(model_dir, target, x_test, model_name, num_classes)
    reloaded_classes = predict(x_test, batch_size).argmax(axis=1)
    parity = float((reloaded_classes == reference_logits.argmax(axis=1)).mean())
    return {
        "export_format": FORMATS[framework],
        "export_size_mb": directory_size_mb(path),
        "load_time_s": load_time,
        "first_prediction_ms": first_prediction * 1000,
        "prediction_parity": parity,
    }
