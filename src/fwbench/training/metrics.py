"""Classification metrics computed once, in NumPy, from each framework's logits.

Both frameworks hand over raw logits and the same code turns them into loss and
accuracy, so a difference in the numbers cannot come from two implementations
of the metric.
"""

from __future__ import annotations

import numpy as np


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy, computed stably in float64."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def hit_ratio(logits: np.ndarray, candidates_per_user: int, k: int) -> float:
    """Leave-one-out hit ratio @ k (He et al., 2017) of a two-class (not interacted, interacted) model.

    The rows come in blocks of `candidates_per_user`, one block per user: its held-out item first,
    then items the user never rated. A user is a hit when fewer than k of its candidates score above
    the held-out item (ties count for it); the score is the log-odds of "interacted".
    """
    scores = (logits[:, 1] - logits[:, 0]).astype(np.float64).reshape(-1, candidates_per_user)
    ranked_above = (scores[:, 1:] > scores[:, :1]).sum(axis=1)
    return float((ranked_above < k).mean())


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def classification_report(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(predictions, labels, num_classes)
    class_totals = matrix.sum(axis=1)
    per_class = np.divide(
        np.diag(matrix), class_totals, out=np.zeros(num_classes), where=class_totals > 0
    )
    return {
        "test_accuracy": accuracy(logits, labels),
        "test_loss": cross_entropy(logits, labels),
        "per_class_accuracy": [float(v) for v in per_class],
        "confusion_matrix": matrix.tolist(),
        "num_test_samples": int(len(labels)),
    }
