"""Seeded arrays with exactly the shapes and dtypes a dataset's preprocess writes, for speed and memory runs
where the dataset itself is absent (`dataset.synthetic=true`).

Values are in the real ranges (pixels in [0, 1], token ids below vocab_size, user and
item indices below their counts, labels below num_classes) and carry no signal:
a model trained on them learns nothing, so their accuracy means nothing. They are
written to data/<name>/synthetic, never where the real arrays go, and the manifest says
`synthetic: true`.
"""

from __future__ import annotations

import numpy as np

from fwbench.errors import ConfigError

# What a dataset gives and a model takes (`input:` in config/dataset and config/model).
INPUT_KINDS = ("image", "tokens", "user_item")


def make(dataset_cfg, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """x/y of the train and test splits as the real preprocess would shape them, before the validation split."""
    rng = np.random.default_rng(seed)
    kind = str(dataset_cfg.get("input", "image"))
    counts = split_counts(dataset_cfg)
    arrays = {}
    for split, count in counts.items():
        arrays[f"x_{split}"] = inputs(dataset_cfg, kind, count, rng)
        arrays[f"y_{split}"] = rng.integers(0, int(dataset_cfg.num_classes), count, dtype=np.int64)
    return arrays, {"synthetic": True}


def split_counts(dataset_cfg) -> dict[str, int]:
    """Rows of the train and test splits: the real dataset's (MovieLens: its implicit-feedback rows)."""
    if dataset_cfg.get("input") == "user_item":
        users = int(dataset_cfg.num_users)
        train_positives = int(dataset_cfg.ratings_count) - users  # one interaction per user is held out
        return {"train": train_positives * (1 + int(dataset_cfg.train_negatives)),
                "test": users * (1 + int(dataset_cfg.test_negatives))}
    missing = [key for key in ("train_count", "test_count") if dataset_cfg.get(key) is None]
    if missing:
        raise ConfigError(f"dataset {dataset_cfg.name!r} has no {missing[0]}: synthetic data needs train_count and "
                          "test_count (the real split sizes)")
    return {"train": int(dataset_cfg.train_count), "test": int(dataset_cfg.test_count)}


def sample_shape(dataset_cfg) -> tuple[int, ...]:
    """The shape of one input row: an image's (height, width, channels), a review's (tokens,), a (user, item) pair."""
    kind = str(dataset_cfg.get("input", "image"))
    if kind == "image":
        return tuple(int(dim) for dim in dataset_cfg.input_shape)
    if kind == "tokens":
        return (int(dataset_cfg.sequence_length),)
    if kind == "user_item":
        return (2,)
    raise ConfigError(f"dataset {dataset_cfg.name!r} has input {kind!r}: accepted are {', '.join(INPUT_KINDS)}")


def inputs(dataset_cfg, kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    shape = sample_shape(dataset_cfg)
    if kind == "image":
        return rng.random((count, *shape), dtype=np.float32)
    if kind == "tokens":
        return rng.integers(0, int(dataset_cfg.vocab_size), (count, *shape), dtype=np.int32)
    users = rng.integers(0, int(dataset_cfg.num_users), count, dtype=np.int32)
    items = rng.integers(0, int(dataset_cfg.num_items), count, dtype=np.int32)
    return np.stack([users, items], axis=1)
