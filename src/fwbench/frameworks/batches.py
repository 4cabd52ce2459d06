"""Batching shared by the arms: prediction in batches, and an epoch's batch indices made ahead of its steps."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def predict_batched(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    """`predict` on x, `batch_size` samples per call, the outputs joined in order."""
    return np.concatenate([predict(x[start:start + batch_size]) for start in range(0, len(x), batch_size)])


def epoch_batches(order: np.ndarray, batch_size: int, to_device: Callable[[np.ndarray], object]) -> list:
    """The epoch's batch indices, each already a framework array (`to_device`), in step order.

    Made before the first step, as torch's loop moves the whole order to the device once: a
    conversion per step would put host work into every timed step of the arms that take the
    index as an argument of their compiled step (tf_native, jax).
    """
    return [to_device(order[start:start + batch_size]) for start in range(0, len(order), batch_size)]
