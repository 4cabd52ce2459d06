"""Prediction over an array in batches: one loop for every framework's trained and reloaded models."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def predict_batched(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    """`predict` on x, `batch_size` samples per call, the outputs joined in order."""
    return np.concatenate([predict(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])
