"""Read and write IDX files, the format MNIST and Fashion-MNIST are published in.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the data in C order. Only unsigned bytes (0x08) are
accepted because that is what every dataset in this project uses; anything
else means a wrong or corrupted file, and we would rather stop than guess.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from fwbench.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
IDX_ZERO_PREFIX = b"\x00\x00"
IDX_TYPE_UBYTE = 0x08
IDX_PREFIX_BYTES = 4  # zero, zero, type code, number of dimensions
IDX_DIM_BYTES = 4  # each dimension is a big-endian uint32
IDX_DIM_DTYPE = np.dtype(">u4")
GZIP_NO_TIMESTAMP = 0  # a fixed mtime makes written .gz files byte-for-byte reproducible


def read_idx(path: Path, expected_dims: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Return the uint8 array stored in a raw or gzip-compressed IDX file.

    expected_dims checks the number of dimensions and, where an entry is not None,
    that dimension's size, e.g. (None, 28, 28) for a stack of 28x28 images.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    dims, header_bytes = _parse_header(path, raw)
    data = memoryview(raw)[header_bytes:]
    expected_bytes = math.prod(dims)
    if len(data) < expected_bytes:
        raise DataError(f"{path}: truncated: expected {expected_bytes} bytes of data, found {len(data)}")
    if len(data) > expected_bytes:
        raise DataError(
            f"{path}: trailing bytes: expected {expected_bytes} bytes of data for dims {dims}, found {len(data)}"
        )
    # copy() so callers get an ordinary writable array, not a view of the file bytes
    array = np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()
    if expected_dims is not None:
        _check_dims(path, array.shape, expected_dims)
    return array


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX, gzip-compressed when the name ends with .gz."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"{path}: cannot write dtype {array.dtype} as IDX; only uint8 is accepted")
    if array.ndim < 1:
        raise DataError(f"{path}: cannot write a 0-dimensional array as IDX; at least 1 dimension is needed")
    header = IDX_ZERO_PREFIX + bytes([IDX_TYPE_UBYTE, array.ndim])
    header += np.asarray(array.shape, dtype=IDX_DIM_DTYPE).tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw_file:
            with gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=GZIP_NO_TIMESTAMP) as gz:
                gz.write(payload)
    else:
        path.write_bytes(payload)


def _read_maybe_gzip(path: Path) -> bytes:
    """The decompressed bytes; gzip is detected by suffix or magic so renamed files still work."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read IDX file ({error.strerror or error})") from None
    if not (path.name.endswith(".gz") or raw.startswith(GZIP_MAGIC)):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a valid gzip file ({error}); expected a gzip-compressed IDX file") from None


def _parse_header(path: Path, raw: bytes) -> tuple[tuple[int, ...], int]:
    """Validate the header and return (dims, header length in bytes)."""
    if len(raw) < IDX_PREFIX_BYTES:
        raise DataError(f"{path}: truncated: {len(raw)} bytes is shorter than the {IDX_PREFIX_BYTES}-byte IDX header")
    if raw[:2] != IDX_ZERO_PREFIX:
        raise DataError(
            f"{path}: bad IDX magic number 0x{raw[:IDX_PREFIX_BYTES].hex()}; "
            f"accepted: first two bytes 0x0000 followed by type code and dimension count"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code != IDX_TYPE_UBYTE:
        raise DataError(
            f"{path}: IDX type code 0x{type_code:02x} is not supported; "
            f"only 0x{IDX_TYPE_UBYTE:02x} (unsigned byte) is accepted"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX dimension count 0 is invalid; accepted: 1 or more")
    header_bytes = IDX_PREFIX_BYTES + IDX_DIM_BYTES * ndim
    if len(raw) < header_bytes:
        raise DataError(f"{path}: truncated: header of {ndim} dimensions needs {header_bytes} bytes, found {len(raw)}")
    dims = np.frombuffer(raw, dtype=IDX_DIM_DTYPE, count=ndim, offset=IDX_PREFIX_BYTES)
    return tuple(int(d) for d in dims), header_bytes


def _check_dims(path: Path, shape: tuple[int, ...], expected: tuple[int | None, ...]) -> None:
    wanted = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
    if len(shape) != len(expected):
        raise DataError(f"{path}: IDX has {len(shape)} dimensions {shape}; expected {len(expected)}: {wanted}")
    for actual, want in zip(shape, expected):
        if want is not None and actual != want:
            raise DataError(f"{path}: IDX shape {shape} does not match the expected {wanted}")
