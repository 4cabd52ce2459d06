"""IMDB reviews (Stanford's aclImdb_v1.tar.gz) tokenised once, into int32 arrays every framework reads as is.

The tokenizer is deliberately small and has no dependency whose version could
change the ids: lowercase the review, turn the HTML line breaks the reviews carry
(`<br />`) into spaces, and take the runs of letters and digits, apostrophes
inside a word kept (`don't`, `90's`). The vocabulary is the training split's
most frequent words (ties broken alphabetically), `vocab_size` ids in all: id 0
pads, id 1 stands for every word outside the vocabulary, ids 2.. are the words
from the most frequent down. Each review keeps its first `sequence_length` tokens
and is padded with 0 at the end. Labels: 0 negative, 1 positive; the unlabelled
`unsup` reviews are not used.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from fwbench.data.archives import raw_archive, tar_members
from fwbench.errors import ConfigError, DataError

PAD_ID = 0
OOV_ID = 1
FIRST_WORD_ID = 2
LABELS = {"neg": 0, "pos": 1}
SPLIT_NAMES = ("train", "test")
MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/[^/]+\.txt$")
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
EXPECTED = "the aclImdb_v1 tarball (aclImdb/{train,test}/{pos,neg}/*.txt)"


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(LINE_BREAK.sub(" ", text.lower()))


def load(dataset_cfg, raw_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (x_train, y_train, x_test, y_test, vocab) and what the manifest records about them."""
    vocab_size, length = int(dataset_cfg["vocab_size"]), int(dataset_cfg["sequence_length"])
    if vocab_size <= FIRST_WORD_ID or length <= 0:
        raise ConfigError(f"dataset vocab_size={vocab_size}, sequence_length={length}: accepted are "
                          f"vocab_size > {FIRST_WORD_ID} and sequence_length > 0")
    path = raw_archive(raw_dir, dataset_cfg, "archive")
    reviews = read_reviews(path)
    vocabulary = build_vocabulary((tokens for tokens, _ in reviews["train"]), vocab_size)
    arrays = {}
    for split in SPLIT_NAMES:
        arrays[f"x_{split}"] = encode([tokens for tokens, _ in reviews[split]], vocabulary, length)
        arrays[f"y_{split}"] = np.array([label for _, label in reviews[split]], dtype=np.int64)
    arrays["vocab"] = np.array(sorted(vocabulary, key=vocabulary.get), dtype=str)
    info = {"vocab_size": vocab_size, "sequence_length": length, "pad_id": PAD_ID, "oov_id": OOV_ID,
            "tokenizer": "lowercase, <br /> as space, runs of [a-z0-9] with inner apostrophes (fwbench.data.imdb)"}
    return arrays, info


def read_reviews(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """(tokens, label) of every labelled review per split, in member-name order (the archive's own order may vary)."""
    found = {split: [] for split in SPLIT_NAMES}
    for name, data in tar_members(path, EXPECTED, wanted=MEMBER.match):
        split, label = MEMBER.match(name).groups()
        found[split].append((name, tokenize(data.decode("utf-8", errors="replace")), LABELS[label]))
    for split in SPLIT_NAMES:
        labels = {label for _, _, label in found[split]}
        missing = [folder for folder, label in LABELS.items() if label not in labels]
        if missing:
            raise DataError(f"{path}: has no aclImdb/{split}/{missing[0]}/*.txt reviews; expected {EXPECTED}")
    return {split: [(tokens, label) for _, tokens, label in sorted(found[split])] for split in SPLIT_NAMES}


def build_vocabulary(token_lists, vocab_size: int) -> dict[str, int]:
    """word -> id for the vocab_size - 2 most frequent words (ids from 2; 0 pads, 1 is out of vocabulary)."""
    counts = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - FIRST_WORD_ID]
    return {word: FIRST_WORD_ID + rank for rank, (word, _) in enumerate(ranked)}


def encode(token_lists: list[list[str]], vocabulary: dict[str, int], length: int) -> np.ndarray:
    """int32 (N, length): each review's first `length` token ids, padded with 0."""
    out = np.full((len(token_lists), length), PAD_ID, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [vocabulary.get(token, OOV_ID) for token in tokens[:length]]
        out[row, :len(ids)] = ids
    return out
