"""Tests for fwbench.data: IDX parsing, verified downloads and preprocessing.

No network: mirrors are file:// directories in tmp_path or a local http.server
on 127.0.0.1, and the datasets are small generated IDX files.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from fwbench.data import download
from fwbench.data.download import download_dataset, download_file
from fwbench.data.idx import read_idx, write_idx
from fwbench.data.preprocess import load_split, preprocess
from fwbench.errors import DataError, DownloadError

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SIDE = 28
N_CLASSES = 10
N_TRAIN = 60
N_TEST = 20
VAL_SIZE = 10
SEED = 7
SERVER_POLL_S = 0.05  # how quickly the test HTTP server notices shutdown
FAST = {"retries": 2, "backoff_s": 0.0, "timeout_s": 5.0}  # no sleeping in tests


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_mirror(directory: Path) -> str:
    return directory.resolve().as_uri() + "/"


def idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


def make_gz(directory: Path, name: str, payload: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(gzip.compress(payload, mtime=0))
    return path


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name, expected_dims=(None, 3, 4))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, array)


def test_idx_detects_gzip_by_magic_without_suffix(tmp_path):
    array = np.ones((5,), dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", array)
    renamed = (tmp_path / "labels.gz").rename(tmp_path / "labels.bin")
    np.testing.assert_array_equal(read_idx(renamed), array)


def test_idx_rejects_wrong_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x00\x08\x01" + np.asarray([2], ">u4").tobytes() + b"\x00\x00")
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_idx_rejects_wrong_type_code(tmp_path):
    path = tmp_path / "float.idx"
    path.write_bytes(idx_header(0x0D, (2,)) + b"\x00" * 8)
    with pytest.raises(DataError, match=r"0x0d.*only 0x08"):
        read_idx(path)


def test_idx_rejects_truncated_data(tmp_path):
    path = tmp_path / "short.idx.gz"
    make_gz(tmp_path, path.name, idx_header(0x08, (3, 4)) + b"\x00" * 11)
    with pytest.raises(DataError, match="truncated: expected 12 bytes of data, found 11"):
        read_idx(path)


def test_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_header(0x08, (3, 4)) + b"\x00" * 13)
    with pytest.raises(DataError, match="trailing"):
        read_idx(path)


def test_idx_rejects_unexpected_dims(tmp_path):
    write_idx(tmp_path / "a.idx", np.zeros((2, 27, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="does not match"):
        read_idx(tmp_path / "a.idx", expected_dims=(None, 28, 28))
    with pytest.raises(DataError, match="3 dimensions"):
        read_idx(tmp_path / "a.idx", expected_dims=(None,))


# ---------------------------------------------------------------- download


@pytest.fixture
def payload_gz(tmp_path):
    """A mirror directory holding one gzip file; returns (mirror dir, name, archive sha, content sha)."""
    content = b"fwbench test payload\n" * 100
    mirror = tmp_path / "mirror"
    path = make_gz(mirror, "payload.gz", content)
    return mirror, path.name, sha256_bytes(path.read_bytes()), sha256_bytes(content)


@pytest.mark.parametrize("verify", ["archive", "content"])
def test_download_verifies_both_modes(tmp_path, payload_gz, verify):
    mirror, name, archive_sha, content_sha = payload_gz
    sha = archive_sha if verify == "archive" else content_sha
    dest = tmp_path / "dest"
    path = download_file(name, [file_mirror(mirror)], dest, sha, verify, **FAST)
    assert path == dest / name
    assert path.read_bytes() == (mirror / name).read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [name]  # no temp file left


@pytest.mark.parametrize("verify", ["archive", "content"])
def test_download_rejects_tampered_file_and_leaves_nothing(tmp_path, payload_gz, verify):
    mirror, name, archive_sha, content_sha = payload_gz
    sha = archive_sha if verify == "archive" else content_sha
    make_gz(mirror, name, b"tampered content")  # same name, different bytes and content
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(name, [file_mirror(mirror)], dest, sha, verify, **FAST)
    assert list(dest.iterdir()) == []


def test_download_falls_through_to_next_mirror(tmp_path, payload_gz):
    mirror, name, archive_sha, _ = payload_gz
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "dest"
    path = download_file(name, [file_mirror(empty), file_mirror(mirror)], dest, archive_sha, "archive", **FAST)
    assert sha256_bytes(path.read_bytes()) == archive_sha


def test_download_all_mirrors_fail_lists_each_on_one_line(tmp_path, payload_gz):
    _, name, archive_sha, _ = payload_gz
    mirrors = [file_mirror(tmp_path / "nowhere1"), file_mirror(tmp_path / "nowhere2")]
    with pytest.raises(DownloadError) as info:
        download_file(name, mirrors, tmp_path / "dest", archive_sha, "archive", **FAST)
    message = str(info.value)
    assert "\n" not in message
    for mirror in mirrors:
        assert mirror + name in message
    assert "file://" in message and "dataset.mirrors=" in message
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_reuses_verified_file_without_network(tmp_path, payload_gz):
    mirror, name, archive_sha, _ = payload_gz
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / name).write_bytes((mirror / name).read_bytes())
    unreachable = [file_mirror(tmp_path / "nowhere")]
    assert download_file(name, unreachable, dest, archive_sha, "archive", **FAST) == dest / name


def test_download_replaces_existing_bad_file(tmp_path, payload_gz):
    mirror, name, archive_sha, _ = payload_gz
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / name).write_bytes(b"stale")
    path = download_file(name, [file_mirror(mirror)], dest, archive_sha, "archive", **FAST)
    assert sha256_bytes(path.read_bytes()) == archive_sha


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves /flaky/<name> (500 on the first request, then the body), /down/ (always 500), else 404."""

    body = b""
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/down/") or (self.path.startswith("/flaky/") and self.hits[self.path] == 1):
            self.send_error(500, "try again")
        elif self.path.startswith("/flaky/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        else:
            self.send_error(404, "not here")

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def http_server(payload_gz):
    mirror, name, _, _ = payload_gz
    handler = type("Handler", (_Handler,), {"body": (mirror / name).read_bytes(), "hits": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SERVER_POLL_S}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_retries_transient_http_500(tmp_path, payload_gz, http_server):
    _, name, archive_sha, _ = payload_gz
    base, hits = http_server
    path = download_file(name, [f"{base}/flaky/"], tmp_path / "dest", archive_sha, "archive", **FAST)
    assert sha256_bytes(path.read_bytes()) == archive_sha
    assert hits[f"/flaky/{name}"] == 2


def test_download_404_goes_to_next_mirror_without_retry(tmp_path, payload_gz, http_server):
    mirror, name, archive_sha, _ = payload_gz
    base, hits = http_server
    mirrors = [f"{base}/missing/", file_mirror(mirror)]
    path = download_file(name, mirrors, tmp_path / "dest", archive_sha, "archive", **FAST)
    assert sha256_bytes(path.read_bytes()) == archive_sha
    assert hits[f"/missing/{name}"] == 1


def test_download_gives_up_after_retries(tmp_path, payload_gz, http_server):
    _, name, archive_sha, _ = payload_gz
    base, hits = http_server
    with pytest.raises(DownloadError, match=f"HTTP 500.*after {FAST['retries'] + 1} attempts"):
        download_file(name, [f"{base}/down/"], tmp_path / "dest", archive_sha, "archive", **FAST)
    assert hits[f"/down/{name}"] == FAST["retries"] + 1
    assert list((tmp_path / "dest").iterdir()) == []


def test_download_interrupt_leaves_no_partial_file(tmp_path, payload_gz, monkeypatch):
    mirror, name, archive_sha, _ = payload_gz

    def interrupted(response, out, *args):
        out.write(response.read(1))  # something is on disk when the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_copy_chunks", interrupted)
    dest = tmp_path / "dest"
    with pytest.raises(KeyboardInterrupt):
        download_file(name, [file_mirror(mirror)], dest, archive_sha, "archive", **FAST)
    assert list(dest.iterdir()) == []


# ---------------------------------------------------------------- preprocess


def fake_idx_dataset(directory: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, n_train_labels=None) -> dict:
    """Generated MNIST-like .gz IDX files; returns the `files` config with their archive hashes."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, SIDE, SIDE), dtype=np.uint8),
        "train_labels": rng.integers(0, N_CLASSES, (n_train_labels or n_train,), dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, SIDE, SIDE), dtype=np.uint8),
        "test_labels": rng.integers(0, N_CLASSES, (n_test,), dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, array in arrays.items():
        path = directory / f"{key}.idx.gz"
        write_idx(path, array)
        files[key] = {"name": path.name, "sha256": sha256_bytes(path.read_bytes())}
    return files


def idx_cfg(files: dict, mirrors: list[str], **extra):
    cfg = {
        "name": "mnist",
        "source": "idx",
        "num_classes": N_CLASSES,
        "class_names": [str(i) for i in range(N_CLASSES)],
        "verify": "archive",
        "mirrors": mirrors,
        "files": files,
        **extra,
    }
    return OmegaConf.create(cfg)


def digits_cfg():
    return OmegaConf.load(REPO / "config" / "dataset" / "digits.yaml")


def test_mnist_end_to_end(tmp_path):
    mirror = tmp_path / "mirror"
    files = fake_idx_dataset(mirror)
    cfg = idx_cfg(files, [file_mirror(mirror)], train_count=N_TRAIN, test_count=N_TEST)
    raw = tmp_path / "raw"
    paths = download_dataset(cfg, raw)
    assert sorted(p.name for p in paths) == sorted(f["name"] for f in files.values())

    out = tmp_path / "processed"
    manifest = preprocess(cfg, raw, out, val_size=VAL_SIZE, seed=SEED)
    expected_n = {"train": N_TRAIN - VAL_SIZE, "val": VAL_SIZE, "test": N_TEST}
    for split, n in expected_n.items():
        x, y = load_split(out, split)
        assert x.shape == (n, SIDE, SIDE, 1) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert 0 <= y.min() and y.max() < N_CLASSES
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["dataset"] == "mnist" and manifest["seed"] == SEED and manifest["val_size"] == VAL_SIZE
    for name, entry in manifest["arrays"].items():
        assert entry["sha256"] == sha256_bytes((out / entry["file"]).read_bytes()), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "processed", "raw"]  # no temp dirs


def test_preprocess_rejects_image_label_count_mismatch(tmp_path):
    files = fake_idx_dataset(tmp_path, n_train_labels=N_TRAIN - 1)
    with pytest.raises(DataError, match="count mismatch"):
        preprocess(idx_cfg(files, []), tmp_path, tmp_path / "out", val_size=VAL_SIZE, seed=SEED)
    assert not (tmp_path / "out").exists()


def test_preprocess_rejects_count_differing_from_config(tmp_path):
    files = fake_idx_dataset(tmp_path)
    cfg = idx_cfg(files, [], train_count=N_TRAIN + 1)
    with pytest.raises(DataError, match="train_count"):
        preprocess(cfg, tmp_path, tmp_path / "out", val_size=VAL_SIZE, seed=SEED)


@pytest.mark.parametrize("val_size", [0, N_TRAIN])
def test_preprocess_rejects_bad_val_size(tmp_path, val_size):
    files = fake_idx_dataset(tmp_path)
    with pytest.raises(DataError, match=f"val_size={val_size}"):
        preprocess(idx_cfg(files, []), tmp_path, tmp_path / "out", val_size=val_size, seed=SEED)


def test_digits_preprocess_shape_and_range(tmp_path):
    cfg = digits_cfg()
    manifest = preprocess(cfg, tmp_path / "raw", tmp_path / "out", val_size=cfg.val_size, seed=SEED)
    x, y = load_split(tmp_path / "out", "train")
    assert x.shape == (1797 - cfg.test_size - cfg.val_size, SIDE, SIDE, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert not x[:, :2].any() and not x[:, -2:].any()  # the 2-pixel zero border
    assert y.dtype == np.int64
    assert manifest["arrays"]["x_test"]["shape"] == [cfg.test_size, SIDE, SIDE, 1]


def test_val_split_depends_only_on_seed(tmp_path):
    cfg = digits_cfg()
    for name, seed in (("a", SEED), ("b", SEED), ("c", SEED + 1)):
        preprocess(cfg, tmp_path, tmp_path / name, val_size=cfg.val_size, seed=seed)
    x_a, y_a = load_split(tmp_path / "a", "val")
    x_b, y_b = load_split(tmp_path / "b", "val")
    x_c, _ = load_split(tmp_path / "c", "val")
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(x_a, x_c)


def test_preprocess_replaces_existing_output(tmp_path):
    files = fake_idx_dataset(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    preprocess(idx_cfg(files, []), tmp_path / "raw", out, val_size=VAL_SIZE, seed=SEED)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_load_split_detects_tampered_array(tmp_path):
    files = fake_idx_dataset(tmp_path / "raw")
    out = tmp_path / "out"
    preprocess(idx_cfg(files, []), tmp_path / "raw", out, val_size=VAL_SIZE, seed=SEED)
    x, _ = load_split(out, "test")
    x[0, 0, 0, 0] = 0.5 if x[0, 0, 0, 0] != 0.5 else 0.25
    np.save(out / "x_test.npy", x)
    with pytest.raises(DataError, match="x_test.npy: sha256"):
        load_split(out, "test")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_split(out, "holdout")


# ---------------------------------------------------------------- real data (if installed)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_labels_from_local_mirror(tmp_path):
    cfg = OmegaConf.load(REPO / "config" / "dataset" / "fashion_mnist.yaml")
    local = [m for m in cfg.mirrors if m.startswith("file://")]
    for key, count in (("train_labels", cfg.train_count), ("test_labels", cfg.test_count)):
        spec = cfg.files[key]
        path = download_file(spec.name, local, tmp_path, spec.sha256, cfg.verify, **FAST)
        assert sha256_bytes(gzip.decompress(path.read_bytes())) == spec.sha256
        labels = read_idx(path, expected_dims=(None,))
        assert labels.shape == (count,) and labels.max() == cfg.num_classes - 1


def test_hit_ratio_counts_users_whose_held_out_item_ranks_in_the_top_k():
    from fwbench.training.metrics import hit_ratio

    # Two users of 4 candidates each (held-out item first); scores are logit[1] - logit[0].
    scores = np.array([0.9, 0.1, 0.5, 0.2,    # user 0: held-out item ranks 1st
                       0.3, 0.8, 0.7, 0.1])   # user 1: ranks 3rd
    logits = np.stack([np.zeros_like(scores), scores], axis=1)
    assert hit_ratio(logits, 4, k=1) == 0.5
    assert hit_ratio(logits, 4, k=2) == 0.5
    assert hit_ratio(logits, 4, k=3) == 1.0
