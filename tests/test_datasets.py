"""CIFAR-10, IMDB and MovieLens-100k: download and preprocess on generated archives in the real formats.

None of the three can be fetched on the reference machine, so each test writes a small
archive laid out as the publisher's (the same member names, record layout and text
format), serves it from a file:// mirror and runs the real download and preprocess
code on it, with the dataset's own config file, only the counts, the checksum and the
mirror changed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import CONFIG_DIR
from fwbench.config import compose_config
from fwbench.data import cifar10, imdb
from fwbench.data.download import download_dataset
from fwbench.data.preprocess import load_split, preprocess
from fwbench.errors import ConfigError, DataError, DownloadError

SEED = 0


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def dataset_cfg(name: str, served: Path, **changes):
    """config/dataset/<name>.yaml with the archive served from `served`'s folder and its checksum, plus changes."""
    cfg = OmegaConf.load(CONFIG_DIR / "dataset" / f"{name}.yaml")
    cfg.mirrors = [served.parent.resolve().as_uri() + "/"]
    cfg.files.archive.sha256 = sha256_of(served)
    return OmegaConf.merge(cfg, changes)


def download_and_preprocess(cfg, tmp_path: Path) -> tuple[Path, dict]:
    raw, processed = tmp_path / "raw", tmp_path / "processed"
    download_dataset(cfg, raw)
    return processed, preprocess(cfg, raw, processed, int(cfg.val_size), seed=SEED)


# ---------------------------------------------------------------- CIFAR-10


def cifar_archive(path: Path, per_batch: int, rng: np.random.Generator, test: int | None = None):
    """A binary CIFAR-10 tarball with per_batch images in each of the five data batches; returns the images."""
    members, images = {}, {}
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        count = per_batch if name != cifar10.TEST_BATCH or test is None else test
        pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        members[name] = cifar10.encode_batch(pixels, labels)
        images[name] = (pixels, labels)
    members[f"{cifar10.BATCH_DIR}/batches.meta.txt"] = b"airplane\nautomobile\n"
    return write_tar_gz(path, members), images


def test_cifar10_download_and_preprocess_keep_every_pixel_in_nhwc(tmp_path):
    archive, images = cifar_archive(tmp_path / "mirror" / "cifar-10-binary.tar.gz", 8, np.random.default_rng(1))
    cfg = dataset_cfg("cifar10", archive, train_count=40, test_count=8, val_size=4)
    processed, manifest = download_and_preprocess(cfg, tmp_path)
    x_test, y_test = load_split(processed, "test")
    pixels, labels = images[cifar10.TEST_BATCH]
    assert x_test.dtype == np.float32 and x_test.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(x_test, pixels.astype(np.float32) / 255)  # channel order and layout kept
    np.testing.assert_array_equal(y_test, labels)
    x_train, _ = load_split(processed, "train")
    x_val, _ = load_split(processed, "val")
    assert len(x_train) + len(x_val) == 40 and len(x_val) == 4
    assert manifest["arrays"]["x_train"]["dtype"] == "float32"


def test_cifar10_record_layout_is_label_then_red_green_blue_planes():
    pixels = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    pixels[0, 0, 1] = (10, 20, 30)  # row 0, column 1
    record = cifar10.encode_batch(pixels, np.array([7]))
    assert len(record) == cifar10.RECORD_BYTES and record[0] == 7
    assert (record[1 + 1], record[1 + 1024 + 1], record[1 + 2048 + 1]) == (10, 20, 30)
    images, labels = cifar10.decode_batch(Path("x"), "b", record)
    assert tuple(images[0, 0, 1] * 255) == (10, 20, 30) and labels.tolist() == [7]


def test_a_tampered_archive_is_rejected_and_leaves_no_file(tmp_path):
    archive, _ = cifar_archive(tmp_path / "mirror" / "cifar-10-binary.tar.gz", 2, np.random.default_rng(1))
    cfg = OmegaConf.load(CONFIG_DIR / "dataset" / "cifar10.yaml")  # the published checksum
    cfg.mirrors = [archive.parent.resolve().as_uri() + "/"]
    with pytest.raises(DownloadError, match="checksum mismatch") as error:
        download_dataset(cfg, tmp_path / "raw")
    assert "\n" not in str(error.value)
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize("name, members, expected", [
    ("cifar10", None, "not a readable gzip-compressed tar archive"),
    ("cifar10", {cifar10.TRAIN_BATCHES[0]: b"\0" * cifar10.RECORD_BYTES}, "has no member cifar-10-batches-bin/data_batch_2.bin"),
    ("cifar10", {name: b"\0" * 100 for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH)},
     "data_batch_1.bin has 100 bytes; expected a whole number of 3073-byte records"),
    ("imdb", {"aclImdb/train/pos/0_9.txt": b"good", "aclImdb/test/pos/0_9.txt": b"good",
              "aclImdb/test/neg/1_1.txt": b"bad"}, "has no aclImdb/train/neg/*.txt reviews"),
    ("movielens_100k", None, "not a readable zip archive"),
    ("movielens_100k", {"ml-100k/u.item": b"1|Toy Story"}, "has no member ml-100k/u.data"),
    ("movielens_100k", {"ml-100k/u.data": b"1\t2\t5\t881250949\n1,3,4,881250950\n"}, "u.data line 2 is '1,3,4,881250950'"),
])
def test_a_wrong_format_fails_with_one_line_naming_the_file_and_what_was_expected(tmp_path, name, members, expected):
    archive_name = str(OmegaConf.load(CONFIG_DIR / "dataset" / f"{name}.yaml").files.archive.name)
    served = tmp_path / "mirror" / archive_name
    if members is None:  # an HTML error page saved under the archive's name
        served.parent.mkdir(parents=True)
        served.write_bytes(b"<html><body>404 Not Found</body></html>")
    elif archive_name.endswith(".zip"):
        write_zip(served, members)
    else:
        write_tar_gz(served, members)
    cfg = dataset_cfg(name, served)
    with pytest.raises(DataError) as error:
        download_and_preprocess(cfg, tmp_path)
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert archive_name in message and "expected" in message
    assert not (tmp_path / "processed").exists()  # nothing half-written
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".processed")]


# ---------------------------------------------------------------- IMDB


REVIEWS = {
    "aclImdb/train/pos/0_10.txt": "A great film.<br /><br />Great acting, great story!",
    "aclImdb/train/pos/1_8.txt": "Don't miss it: the 90's best film.",
    "aclImdb/train/neg/2_1.txt": "Bad. Bad acting, a bad story and a film I don't recommend.",
    "aclImdb/train/neg/3_2.txt": "Boring film",
    "aclImdb/train/unsup/4_0.txt": "unlabelled words never counted zzz zzz zzz zzz",
    "aclImdb/test/pos/5_9.txt": "great great unknownword",
    "aclImdb/test/neg/6_3.txt": "bad",
    "aclImdb/imdb.vocab": "the\nand\n",
}


def test_imdb_is_tokenised_once_into_the_training_splits_vocabulary(tmp_path):
    served = write_tar_gz(tmp_path / "mirror" / "aclImdb_v1.tar.gz",
                          {name: text.encode() for name, text in REVIEWS.items()})
    cfg = dataset_cfg("imdb", served, train_count=4, test_count=2, val_size=1, vocab_size=6, sequence_length=4)
    processed, manifest = download_and_preprocess(cfg, tmp_path)
    vocab = np.load(processed / manifest["arrays"]["vocab"]["file"]).tolist()
    # Counts over the labelled training reviews: film 4, bad 3, great 3, a 3 ... ; ties alphabetical, 4 words kept.
    assert vocab == ["film", "a", "bad", "great"]
    x_test, y_test = load_split(processed, "test")
    ids = {word: imdb.FIRST_WORD_ID + rank for rank, word in enumerate(vocab)}
    # Test reviews in member-name order: neg/6_3 ("bad"), pos/5_9 ("great great unknownword").
    assert x_test.dtype == np.int32 and x_test.shape == (2, 4)
    assert x_test.tolist() == [[ids["bad"], 0, 0, 0], [ids["great"], ids["great"], imdb.OOV_ID, 0]]
    assert y_test.tolist() == [0, 1]
    x_train, _ = load_split(processed, "train")
    x_val, _ = load_split(processed, "val")
    assert len(x_train) + len(x_val) == 4 and x_train.max() < 6
    assert manifest["vocab_size"] == 6 and manifest["sequence_length"] == 4


def test_imdb_tokenizer_keeps_inner_apostrophes_and_drops_markup():
    assert imdb.tokenize("Don't<br />STOP: it's 90's-style!") == ["don't", "stop", "it's", "90's", "style"]


def test_imdb_truncates_each_review_to_its_first_tokens():
    vocabulary = imdb.build_vocabulary([["b", "a", "a"]], vocab_size=4)
    assert vocabulary == {"a": 2, "b": 3}
    assert imdb.encode([["a", "b", "c", "a", "b"]], vocabulary, 3).tolist() == [[2, 3, imdb.OOV_ID]]


# ---------------------------------------------------------------- MovieLens-100k


def ratings_file(rows: list[tuple[int, int, int, int]]) -> bytes:
    return "".join(f"{user}\t{item}\t{rating}\t{stamp}\n" for user, item, rating, stamp in rows).encode()


def test_movielens_leave_one_out_with_sampled_negatives(tmp_path):
    rng = np.random.default_rng(3)
    users, items = 6, 30
    rows = [(user, int(item), 4, int(stamp)) for user in range(1, users + 1)
            for item, stamp in zip(rng.choice(np.arange(1, items + 1), 5, replace=False), rng.permutation(100)[:5])]
    served = write_zip(tmp_path / "mirror" / "ml-100k.zip", {"ml-100k/u.data": ratings_file(rows)})
    cfg = dataset_cfg("movielens_100k", served, num_users=users, num_items=items, ratings_count=len(rows),
                      train_negatives=2, test_negatives=9, val_size=3)
    processed, manifest = download_and_preprocess(cfg, tmp_path)
    x_test, y_test = load_split(processed, "test")
    assert x_test.dtype == np.int32 and x_test.shape == (users * 10, 2)
    assert manifest["candidates_per_user"] == 10
    rated = {user - 1: {item - 1 for u, item, _, _ in rows if u == user} for user in range(1, users + 1)}
    for user in range(users):
        block, labels = x_test[user * 10:(user + 1) * 10], y_test[user * 10:(user + 1) * 10]
        latest = max((stamp, item) for u, item, _, stamp in rows if u == user + 1)[1] - 1
        assert (block[:, 0] == user).all() and block[0, 1] == latest and labels.tolist() == [1] + [0] * 9
        assert not set(block[1:, 1].tolist()) & rated[user] and len(set(block[1:, 1].tolist())) == 9
    x_train, y_train = load_split(processed, "train")
    x_val, y_val = load_split(processed, "val")
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    assert len(x_all) == users * 4 * 3  # 4 training positives per user, 2 negatives each
    for (user, item), label in zip(x_all.tolist(), y_all.tolist()):
        assert (item in rated[user]) == bool(label)
    # Seeded: the same archive gives the same rows.
    again = preprocess(cfg, tmp_path / "raw", tmp_path / "again", int(cfg.val_size), seed=SEED)
    assert again["arrays"]["x_test"]["sha256"] == manifest["arrays"]["x_test"]["sha256"]


def test_movielens_rejects_an_id_beyond_the_configured_count(tmp_path):
    served = write_zip(tmp_path / "mirror" / "ml-100k.zip",
                       {"ml-100k/u.data": ratings_file([(1, 1, 5, 1), (1, 2, 5, 2), (2, 31, 3, 3)])})
    cfg = dataset_cfg("movielens_100k", served, num_users=2, num_items=30, ratings_count=3)
    with pytest.raises(DataError, match=r"has item id 31; accepted are 1 to 30 \(config num_items\)"):
        download_and_preprocess(cfg, tmp_path)


# ---------------------------------------------------------------- config


def test_a_model_that_does_not_take_the_datasets_input_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="model 'mlp' takes image input but dataset 'imdb' gives tokens: "
                                          "accepted models for it are lstm, transformer"):
        compose_config(CONFIG_DIR, ["dataset=imdb", "model=mlp"])
    assert compose_config(CONFIG_DIR, ["dataset=cifar10", "model=convnet"]).dataset.input == "image"


@pytest.mark.parametrize("overrides, message", [
    (["dataset=imdb", "model=lstm", "dataset.vocab_size=5000"],
     "model 'lstm' has vocab=20000 but dataset 'imdb' has vocab_size=5000: accepted is vocab=5000 "
     "(config/model/lstm.yaml)"),
    (["dataset=movielens_100k", "model=ncf", "dataset.num_items=1000"],
     "model 'ncf' has items=1682 but dataset 'movielens_100k' has num_items=1000: accepted is items=1000"),
    (["dataset=cifar10", "model=lenet", "dataset.input_shape=[6,6,3]"],
     "model 'lenet' cannot take the inputs of dataset 'cifar10', shape (6, 6, 3): its Conv layer's output would "
     "be (0, 0, 16)"),
])
def test_a_model_whose_sizes_do_not_fit_the_dataset_is_refused_when_composed(overrides, message):
    model = overrides[1].split("=")[1]
    with pytest.raises(ConfigError) as caught:
        compose_config(CONFIG_DIR, [*overrides, f"experiment.models=[{model}]"])
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------- synthetic data


@pytest.mark.parametrize("name", ["cifar10", "imdb", "movielens_100k"])
def test_synthetic_data_has_the_real_shapes_and_dtypes_and_goes_elsewhere(tmp_path, name):
    """dataset.synthetic=true writes what preprocess writes for the real archive, shape for shape, dtype for dtype."""
    if name == "cifar10":
        served, _ = cifar_archive(tmp_path / "mirror" / "cifar-10-binary.tar.gz", 4, np.random.default_rng(2))
        changes = {"train_count": 20, "test_count": 4, "val_size": 2}
    elif name == "imdb":
        served = write_tar_gz(tmp_path / "mirror" / "aclImdb_v1.tar.gz",
                              {name: text.encode() for name, text in REVIEWS.items()})
        changes = {"train_count": 4, "test_count": 2, "val_size": 1, "vocab_size": 6, "sequence_length": 4}
    else:
        rows = [(user, item, 3, user * 10 + item) for user in (1, 2, 3) for item in (1, 2, 3, 4)]
        served = write_zip(tmp_path / "mirror" / "ml-100k.zip", {"ml-100k/u.data": ratings_file(rows)})
        changes = {"num_users": 3, "num_items": 12, "ratings_count": 12, "train_negatives": 2, "test_negatives": 5,
                   "val_size": 2}
    cfg = dataset_cfg(name, served, **changes)
    _, real = download_and_preprocess(cfg, tmp_path)
    fake = preprocess(OmegaConf.merge(cfg, {"synthetic": True}), tmp_path / "no-raw-files", tmp_path / "synthetic",
                      int(cfg.val_size), seed=SEED)
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert (fake["arrays"][key]["shape"], fake["arrays"][key]["dtype"]) == \
            (real["arrays"][key]["shape"], real["arrays"][key]["dtype"]), key
    assert fake["synthetic"] is True and "synthetic" not in real
    x_train, y_train = load_split(tmp_path / "synthetic", "train")
    assert y_train.min() >= 0 and y_train.max() < cfg.num_classes
    if name == "imdb":
        assert x_train.min() >= 0 and x_train.max() < cfg.vocab_size
    if name == "movielens_100k":
        assert x_train[:, 0].max() < cfg.num_users and x_train[:, 1].max() < cfg.num_items


def test_synthetic_data_lives_apart_from_the_real_arrays_and_needs_no_download():
    from fwbench.config import processed_dir

    real = compose_config(CONFIG_DIR, ["dataset=cifar10", "model=convnet"])
    fake = compose_config(CONFIG_DIR, ["dataset=cifar10", "model=convnet", "dataset.synthetic=true"])
    assert processed_dir(real).name == "processed" and processed_dir(fake).name == "synthetic"
    with pytest.raises(ConfigError, match="dataset 'digits' has no train_count: synthetic data needs"):
        compose_config(CONFIG_DIR, ["dataset=digits", "dataset.synthetic=true"])
    with pytest.raises(ConfigError, match="dataset.synthetic='yes' is invalid: accepted are true, false"):
        compose_config(CONFIG_DIR, ["dataset=cifar10", "dataset.synthetic=yes"])
