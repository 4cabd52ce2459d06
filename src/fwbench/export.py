"""Deployment check (the article's claim 5): export each trained model to its
framework's deployable format (the framework module's `export`: a SavedModel
for TensorFlow, a torch.export .pt2 for PyTorch), reload it, and measure what
can be measured.

Measured: exported size on disk, load time, latency of the first prediction
after loading (batch 1), and prediction parity: the fraction of test samples
whose predicted class is the same as the trained model's. Load and first
prediction are timed in the evaluating process, after the framework is imported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fwbench.frameworks import registry as frameworks
from fwbench.frameworks.batches import predict_batched
from fwbench.units import BYTES_PER_MIB

EXPORT_DIR = "export"


def directory_size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / BYTES_PER_MIB


def export_and_reload(
    framework: str, model_cfg, model_dir: Path, out_dir: Path,
    x_test: np.ndarray, reference_logits: np.ndarray, num_classes: int, batch_size: int,
) -> dict:
    """Export, reload, and compare the reloaded model's predicted classes with the trained model's.

    An arm without a deployable format of its own (its spec's export_format is None) exports nothing: {}.
    """
    export_format = frameworks.spec(framework).export_format
    if export_format is None:
        return {}
    target = Path(out_dir) / EXPORT_DIR
    shutil.rmtree(target, ignore_errors=True)
    path, load_time, first_prediction, predict = frameworks.load(framework).export(
        model_dir, target, x_test, model_cfg, num_classes)
    reloaded_classes = predict_batched(predict, x_test, batch_size).argmax(axis=1)
    parity = float((reloaded_classes == reference_logits.argmax(axis=1)).mean())
    return {
        "export_format": export_format,
        "export_size_mb": directory_size_mb(path),
        "load_time_s": load_time,
        "first_prediction_ms": first_prediction * 1000,
        "prediction_parity": parity,
    }
