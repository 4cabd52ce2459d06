"""MovieLens-100k (GroupLens' ml-100k.zip) as implicit feedback, the way the NCF paper evaluates it.

Every rating is a positive interaction (the rating's value is not used). Each
user's latest interaction (largest timestamp; of equal timestamps the larger item
id) is held out as the test item: the test split has, per user, that item and
`test_negatives` items the user never rated, drawn without replacement, the
positive first (hit ratio @ k ranks the rows of one user against each other).
The other interactions are the training positives, each with `train_negatives`
never-rated items drawn for it. Users and items become 0-based indices; an input
row is (user, item) as int32, the label 1 (interacted) or 0. Draws use a
generator seeded by the dataset's split seed, so both frameworks read the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fwbench.data.archives import raw_archive, zip_member
from fwbench.errors import DataError

RATINGS_MEMBER = "ml-100k/u.data"
FIELDS = 4  # user id, item id, rating, timestamp; tab-separated
EXPECTED = f"GroupLens' ml-100k.zip with {RATINGS_MEMBER} (user id, item id, rating, timestamp per line, tab-separated)"


def load(dataset_cfg, raw_dir: Path, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (x_train, y_train, x_test, y_test) and what the manifest records about them."""
    path = raw_archive(raw_dir, dataset_cfg, "archive")
    users, items = int(dataset_cfg["num_users"]), int(dataset_cfg["num_items"])
    ratings = parse_ratings(path, zip_member(path, RATINGS_MEMBER, EXPECTED), users, items)
    expected = dataset_cfg.get("ratings_count")
    if expected is not None and len(ratings) != int(expected):
        raise DataError(f"{path}: {RATINGS_MEMBER} has {len(ratings)} ratings; config ratings_count expects {expected}")
    arrays = implicit_feedback(ratings, users, items, int(dataset_cfg["train_negatives"]),
                               int(dataset_cfg["test_negatives"]), np.random.default_rng(seed))
    info = {"num_users": users, "num_items": items, "candidates_per_user": int(dataset_cfg["test_negatives"]) + 1}
    return arrays, info


def parse_ratings(path: Path, data: bytes, users: int, items: int) -> np.ndarray:
    """int64 (N, 4) rows of 0-based user, 0-based item, rating, timestamp; one line naming any bad row."""
    rows = []
    for number, line in enumerate(data.decode("ascii", errors="replace").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != FIELDS or not all(field.strip().isdigit() for field in fields):
            raise DataError(f"{path}: {RATINGS_MEMBER} line {number} is {line[:60]!r}; expected {EXPECTED}")
        rows.append([int(field) for field in fields])
    if not rows:
        raise DataError(f"{path}: {RATINGS_MEMBER} is empty; expected {EXPECTED}")
    ratings = np.array(rows, dtype=np.int64)
    ratings[:, :2] -= 1
    for column, name, count in ((0, "user", users), (1, "item", items)):
        bad = (ratings[:, column] < 0) | (ratings[:, column] >= count)
        if bad.any():
            value = ratings[np.argmax(bad), column] + 1
            raise DataError(f"{path}: {RATINGS_MEMBER} has {name} id {value}; accepted are 1 to {count} "
                            f"(config num_{name}s)")
    return ratings


def implicit_feedback(ratings: np.ndarray, users: int, items: int, train_negatives: int, test_negatives: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Leave-one-out split with sampled negatives (module docstring); users in index order."""
    order = np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))  # by user, then time, then item
    ratings = ratings[order]
    train_x, train_y, test_x, test_y = [], [], [], []
    for user in range(users):
        rated = ratings[ratings[:, 0] == user, 1]
        if len(rated) < 2:
            raise DataError(f"user {user + 1} has {len(rated)} rating(s); leave-one-out needs at least 2 per user")
        unrated = np.setdiff1d(np.arange(items), rated)
        if len(unrated) < test_negatives:
            raise DataError(f"user {user + 1} left {len(unrated)} unrated items; test_negatives={test_negatives} "
                            "needs that many")
        held_out, positives = rated[-1], rated[:-1]
        candidates = np.concatenate([[held_out], rng.choice(unrated, size=test_negatives, replace=False)])
        test_x.append(np.stack([np.full(len(candidates), user), candidates], axis=1))
        test_y.append(np.r_[1, np.zeros(test_negatives, dtype=np.int64)])
        negatives = rng.choice(unrated, size=len(positives) * train_negatives, replace=True)
        train_items = np.concatenate([positives, negatives])
        train_x.append(np.stack([np.full(len(train_items), user), train_items], axis=1))
        train_y.append(np.r_[np.ones(len(positives), dtype=np.int64), np.zeros(len(negatives), dtype=np.int64)])
    return {
        "x_train": np.concatenate(train_x).astype(np.int32), "y_train": np.concatenate(train_y).astype(np.int64),
        "x_test": np.concatenate(test_x).astype(np.int32), "y_test": np.concatenate(test_y).astype(np.int64),
    }
