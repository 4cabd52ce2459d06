"""CIFAR-10 from its binary tarball (cifar-10-binary.tar.gz, Krizhevsky's page), as float32 NHWC in [0, 1].

The binary version is the one TensorFlow Datasets verifies by SHA-256, so it is
the one configured. Each batch file is a run of 3,073-byte records: one label
byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes of a 32x32 image in
row-major order. The five data batches are the training split, test_batch the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fwbench.data.archives import raw_archive, tar_members
from fwbench.errors import DataError

SIDE = 32
CHANNELS = 3
LABEL_BYTES = 1
RECORD_BYTES = LABEL_BYTES + CHANNELS * SIDE * SIDE
PIXEL_MAX = 255
BATCH_DIR = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"{BATCH_DIR}/data_batch_{index}.bin" for index in range(1, 6))
TEST_BATCH = f"{BATCH_DIR}/test_batch.bin"
EXPECTED = f"the CIFAR-10 binary tarball ({', '.join((*TRAIN_BATCHES, TEST_BATCH))})"


def load(dataset_cfg, raw_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)): float32 (N, 32, 32, 3) in [0, 1] and int64 labels."""
    path = raw_archive(raw_dir, dataset_cfg, "archive")
    batches = dict(tar_members(path, EXPECTED, wanted=lambda name: name in (*TRAIN_BATCHES, TEST_BATCH)))
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if name not in batches]
    if missing:
        raise DataError(f"{path}: has no member {missing[0]}; expected {EXPECTED}")
    train = [decode_batch(path, name, batches[name]) for name in TRAIN_BATCHES]
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    x_test, y_test = decode_batch(path, TEST_BATCH, batches[TEST_BATCH])
    return (x_train, y_train), (x_test, y_test)


def decode_batch(path: Path, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's records -> (float32 NHWC images, int64 labels)."""
    if not data or len(data) % RECORD_BYTES:
        raise DataError(f"{path}: member {name} has {len(data)} bytes; expected a whole number of "
                        f"{RECORD_BYTES}-byte records (1 label byte, 3x32x32 pixel bytes)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    planes = records[:, LABEL_BYTES:].reshape(-1, CHANNELS, SIDE, SIDE)
    images = planes.transpose(0, 2, 3, 1).astype(np.float32) / PIXEL_MAX
    return np.ascontiguousarray(images), labels


def encode_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The inverse of decode_batch for uint8 NHWC images: what tests write into generated archives."""
    planes = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], planes], axis=1).tobytes()
