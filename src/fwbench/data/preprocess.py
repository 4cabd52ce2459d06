"""Turn raw dataset files into the arrays both frameworks train on, plus a manifest.

Every dataset ends up the same way: inputs (float32 images in [0, 1], NHWC, such as
(N, 28, 28, 1); int32 token ids for IMDB; int32 (user, item) rows for MovieLens),
int64 labels, and a train/val/test split fixed by a seed. Doing this once,
outside either framework, guarantees TensorFlow and PyTorch see identical bytes;
the manifest's SHA-256 per array lets every later step prove that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from fwbench.data import cifar10, imdb, movielens, synthetic
from fwbench.data.idx import read_idx
from fwbench.errors import ConfigError, DataError

IMAGE_SIDE = 28
PIXEL_MAX = 255
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
IDX_FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
SOURCES = ("idx", "sklearn_digits", "cifar10_binary", "aclimdb", "movielens_100k")
DIGITS_SIDE = 8
DIGITS_MAX = 16  # sklearn's digits count ink pixels in 4x4 blocks: values 0..16
DIGITS_UPSCALE = IMAGE_SIDE // DIGITS_SIDE  # 3: the largest integer factor that fits, 8x8 -> 24x24
DIGITS_PAD = (IMAGE_SIDE - DIGITS_SIDE * DIGITS_UPSCALE) // 2  # 2 pixels each side -> 28x28
DIR_MODE = 0o755  # mkdtemp creates 0700; the output should be readable like any other directory
HASH_CHUNK_BYTES = 1 << 20


def preprocess(dataset_cfg, raw_dir: Path, out_dir: Path, val_size: int, seed: int) -> dict:
    """Write x/y arrays for train, val and test plus manifest.json into out_dir; return the manifest."""
    num_classes = int(dataset_cfg["num_classes"])
    class_names = [str(name) for name in dataset_cfg.get("class_names") or []]
    if class_names and len(class_names) != num_classes:
        raise ConfigError(f"dataset has {len(class_names)} class_names but num_classes={num_classes}; they must match")
    if dataset_cfg.get("synthetic"):
        arrays, source_info = synthetic.make(dataset_cfg, seed)
    else:
        arrays, source_info = load_source(dataset_cfg, Path(raw_dir), seed)
    _check_labels("train", arrays["y_train"], num_classes)
    _check_labels("test", arrays["y_test"], num_classes)
    (arrays["x_train"], arrays["y_train"]), (arrays["x_val"], arrays["y_val"]) = split_validation(
        arrays["x_train"], arrays["y_train"], val_size, seed)
    info = {
        "dataset": str(dataset_cfg["name"]),
        "num_classes": num_classes,
        "class_names": class_names,
        "seed": int(seed),
        "val_size": int(val_size),
        **source_info,
    }
    return _write_atomically(Path(out_dir), arrays, info)


def load_source(dataset_cfg, raw_dir: Path, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """The train and test arrays of dataset_cfg.source in their final dtypes (with any arrays beside them, such
    as IMDB's vocabulary), and what the manifest records about them. Images are float32 NHWC in [0, 1]."""
    source = str(dataset_cfg.get("source", "idx"))
    if source == "idx":
        return _image_arrays(dataset_cfg, _load_idx(dataset_cfg, raw_dir), grey=True), {}
    if source == "sklearn_digits":
        return _image_arrays(dataset_cfg, _load_digits(int(dataset_cfg["test_size"]), seed), grey=True), {}
    if source == "cifar10_binary":
        return _image_arrays(dataset_cfg, cifar10.load(dataset_cfg, raw_dir), grey=False), {}
    if source == "aclimdb":
        return imdb.load(dataset_cfg, raw_dir)
    if source == "movielens_100k":
        return movielens.load(dataset_cfg, raw_dir, seed)
    raise ConfigError(f"dataset source '{source}' is unknown; accepted: {', '.join(SOURCES)}")


def _image_arrays(dataset_cfg, splits, grey: bool) -> dict[str, np.ndarray]:
    """x/y of the train and test splits, counts checked against the config; grey uint8 (N, H, W) become
    float32 (N, H, W, 1) in [0, 1] (colour images come in that form already)."""
    arrays = {}
    for split, (images, labels) in zip(("train", "test"), splits):
        _check_counts(split, len(images), len(labels), dataset_cfg.get(f"{split}_count"))
        arrays[f"x_{split}"] = _to_nhwc_float(images) if grey else images
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


def load_split(processed_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) for one split after checking both files against the manifest's SHA-256."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; accepted: {', '.join(SPLITS)}")
    processed_dir = Path(processed_dir)
    manifest = read_manifest(processed_dir)
    x = _load_verified(processed_dir, manifest, f"x_{split}")
    y = _load_verified(processed_dir, manifest, f"y_{split}")
    return x, y


def read_manifest(processed_dir: Path) -> dict:
    """The manifest written by preprocess (dataset name, class names, seed and per-array hashes)."""
    path = Path(processed_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found; run the preprocess step first") from None
    except (OSError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        raise DataError(f"{path} is unreadable ({reason}); run the preprocess step again") from None


def split_validation(x: np.ndarray, y: np.ndarray, val_size: int, seed: int):
    """Move val_size samples, chosen by a seeded permutation, from (x, y) into a validation set.

    Both parts keep the original order (sorted indices) so the split is easy to inspect.
    """
    _check_holdout_size("val_size", val_size, len(y))
    order = np.random.default_rng(seed).permutation(len(y))
    val_idx = np.sort(order[:val_size])
    train_idx = np.sort(order[val_size:])
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _check_holdout_size(name: str, size, total: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 < size < total:
        raise DataError(
            f"{name}={size!r} is out of range; accepted: an integer from 1 to {total - 1} ({total} samples)"
        )


def _load_idx(dataset_cfg, raw_dir: Path):
    files = dataset_cfg.get("files") or {}
    missing = [key for key in IDX_FILE_KEYS if key not in files]
    if missing:
        raise ConfigError(f"dataset files lacks {', '.join(missing)}; accepted keys: {', '.join(IDX_FILE_KEYS)}")
    splits = []
    for split in ("train", "test"):
        images = _read_idx_file(raw_dir, files[f"{split}_images"], (None, IMAGE_SIDE, IMAGE_SIDE))
        labels = _read_idx_file(raw_dir, files[f"{split}_labels"], (None,))
        splits.append((images, labels))
    return splits


def _read_idx_file(raw_dir: Path, spec, expected_dims) -> np.ndarray:
    path = raw_dir / str(spec["name"])
    if not path.exists():
        raise DataError(f"{path} not found; run the download step first")
    return read_idx(path, expected_dims)


def _check_counts(split: str, n_images: int, n_labels: int, expected) -> None:
    if n_images != n_labels:
        raise DataError(f"{split} count mismatch: {n_images} images but {n_labels} labels; they must be equal")
    if expected is not None and n_images != int(expected):
        raise DataError(f"{split} count mismatch: found {n_images} samples, config {split}_count expects {expected}")


def _check_labels(split: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.max() if labels.max() >= num_classes else labels.min()
        raise DataError(
            f"{split} label {bad} is out of range; accepted: 0 to {num_classes - 1} (num_classes={num_classes})"
        )


def _load_digits(test_size: int, seed: int):
    """sklearn's bundled 8x8 digits (offline), brought to the MNIST layout: uint8 28x28.

    Upscaling uses np.kron with a block of ones (nearest neighbour): it is exact
    (every source pixel becomes a 3x3 block, no interpolated values) and needs no
    image-resampling library, whose version could change the pixels.
    """
    from sklearn.datasets import load_digits  # imported here: only this dataset needs sklearn

    digits = load_digits()
    images = np.rint(digits.images * (PIXEL_MAX / DIGITS_MAX)).astype(np.uint8)
    block = np.ones((1, DIGITS_UPSCALE, DIGITS_UPSCALE), dtype=np.uint8)
    images = np.kron(images, block)
    pad = ((0, 0), (DIGITS_PAD, DIGITS_PAD), (DIGITS_PAD, DIGITS_PAD))
    images = np.pad(images, pad, mode="constant", constant_values=0)
    labels = digits.target.astype(np.int64)
    _check_holdout_size("test_size", test_size, len(labels))
    # Same seeded permutation scheme as the validation split, applied to all samples first.
    (x_train, y_train), (x_test, y_test) = split_validation(images, labels, test_size, seed)
    return (x_train, y_train), (x_test, y_test)


def _to_nhwc_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1]; NHWC is what both frameworks' loaders expect here."""
    return (images.astype(np.float32) / PIXEL_MAX)[..., np.newaxis]


def _write_atomically(out_dir: Path, arrays: dict[str, np.ndarray], info: dict) -> dict:
    """Write all arrays and the manifest into a temp dir beside out_dir, then swap it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:  # finally, not except: an interrupt must not leave the temp dir behind either
        os.chmod(tmp_dir, DIR_MODE)
        entries = {name: _save_array(tmp_dir, name, array) for name, array in arrays.items()}
        manifest = {**info, "arrays": entries}
        (tmp_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp_dir, out_dir)
        tmp_dir = None
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return manifest


def _save_array(directory: Path, name: str, array: np.ndarray) -> dict:
    path = directory / f"{name}.npy"
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "shape": list(array.shape), "dtype": str(array.dtype), "sha256": _sha256_file(path)}


def _replace_dir(new_dir: Path, out_dir: Path) -> None:
    """Rename new_dir to out_dir; an existing out_dir is moved aside first and removed afterwards.

    POSIX cannot atomically swap non-empty directories, so there is a brief moment
    with no out_dir at all, but never one with a mix of old and new files.
    """
    if not out_dir.exists():
        os.rename(new_dir, out_dir)
        return
    old_dir = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
    os.rename(out_dir, old_dir)
    try:
        os.rename(new_dir, out_dir)
    except BaseException:
        os.rename(old_dir, out_dir)  # put the previous result back rather than lose it
        raise
    shutil.rmtree(old_dir, ignore_errors=True)


def _load_verified(processed_dir: Path, manifest: dict, name: str) -> np.ndarray:
    entry = manifest.get("arrays", {}).get(name)
    if entry is None:
        raise DataError(f"{processed_dir / MANIFEST_NAME} has no entry for {name}; run the preprocess step again")
    path = processed_dir / entry["file"]
    if not path.exists():
        raise DataError(f"{path} not found; run the preprocess step again")
    actual = _sha256_file(path)
    if actual != entry["sha256"]:
        raise DataError(
            f"{path}: sha256 {actual} does not match the manifest's {entry['sha256']}; run the preprocess step again"
        )
    return np.load(path, allow_pickle=False)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            sha.update(chunk)
    return sha.hexdigest()
