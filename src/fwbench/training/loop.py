"""The training loop both frameworks share: per-epoch history, checkpoints, resume, SIGTERM.

The adapters (each framework module's `Adapter`) do the framework work: one epoch
over a given sample order, logits for a batch of inputs, and saving/restoring.
Everything that must be the same for a fair comparison lives here: the sample
order of every epoch, the per-epoch reseeding, the metrics, the timing.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fwbench.errors import Interrupted
from fwbench.runtime import write_json_atomic
from fwbench.training.metrics import accuracy, cross_entropy, hit_ratio

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
PROGRESS_FILE = "progress.json"


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    epoch_time_s: float
    elapsed_s: float
    # Hit ratio @ k on the ranking split after this epoch (RankingCheck); None where there is none.
    hit_ratio: float | None = None


@dataclass
class RankingCheck:
    """A leave-one-out ranking split (MovieLens' test users, fwbench.data.movielens), scored after every
    epoch so that a run has a time to its hit-ratio target.

    That is the NCF benchmarks' rule (MLPerf's NCF scores HR@10 on its test users after each epoch): the
    training reads nothing of it, and with a fixed number of epochs nothing is chosen by it.
    """

    x: np.ndarray  # blocks of candidates_per_user (user, item) rows, the held-out item first
    candidates_per_user: int
    k: int

    def score(self, adapter, batch_size: int) -> float:
        return hit_ratio(adapter.predict_logits(self.x, batch_size), self.candidates_per_user, self.k)


def epoch_order(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The sample order of one epoch, a function of (seed, epoch) alone.

    Both frameworks see the same batches, and a resumed run sees the same
    order it would have seen without the interruption.
    """
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def epoch_seed(seed: int, epoch: int) -> int:
    """A per-epoch seed for framework RNGs (dropout), so resuming needs no RNG state."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def predict_metrics(adapter, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    logits = adapter.predict_logits(x, batch_size)
    return cross_entropy(logits, y), accuracy(logits, y)


class SigtermFlag:
    """Turns SIGTERM into a flag the adapters poll between steps."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def __enter__(self) -> "SigtermFlag":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: abandoning the current epoch; the last checkpoint stands")
        self.raised = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def time_to_target(history: list[EpochRecord], metric: str, targets: list[float]) -> dict[str, float | None]:
    """Training wall time (s) at the end of the first epoch whose `metric` (an EpochRecord field) reached
    each target; None for a target no epoch reached."""
    values = [(record.elapsed_s, getattr(record, metric)) for record in history]
    return {f"{target:g}": next((elapsed for elapsed, value in values if value is not None and value >= target), None)
            for target in targets}


def recover_checkpoint(out_dir: Path) -> None:
    """A kill between save_checkpoint's two renames leaves only checkpoint.old: put it back."""
    final = out_dir / CHECKPOINT_DIR
    old = out_dir / f"{CHECKPOINT_DIR}.old"
    if not final.exists() and old.exists():
        old.rename(final)


def load_progress(out_dir: Path) -> list[EpochRecord]:
    path = out_dir / CHECKPOINT_DIR / PROGRESS_FILE
    if not path.exists():
        return []
    return [EpochRecord(**row) for row in json.loads(path.read_text())["history"]]


def save_checkpoint(adapter, out_dir: Path, history: list[EpochRecord]) -> None:
    """Write the checkpoint beside the old one, then swap, so a kill never leaves a broken one."""
    final = out_dir / CHECKPOINT_DIR
    staging = out_dir / f"{CHECKPOINT_DIR}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    adapter.save_checkpoint(staging)
    write_json_atomic(staging / PROGRESS_FILE, {"history": [asdict(r) for r in history]})
    old = out_dir / f"{CHECKPOINT_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def fit(adapter, data: dict, trainer_cfg, seed: int, out_dir: Path,
        ranking: RankingCheck | None = None) -> list[EpochRecord]:
    """Train to trainer_cfg.epochs, resuming from out_dir's checkpoint when there is one.

    After each epoch: validation loss and accuracy, and the ranking split's hit ratio where there is one;
    neither counts in the epoch's time.
    """
    out_dir = Path(out_dir)
    recover_checkpoint(out_dir)
    history = load_progress(out_dir)
    if history:
        adapter.load_checkpoint(out_dir / CHECKPOINT_DIR)
        log.info("resuming after epoch %d from %s", history[-1].epoch, out_dir / CHECKPOINT_DIR)
    x_train, y_train = data["train"]
    x_val, y_val = data["val"]
    elapsed = history[-1].elapsed_s if history else 0.0
    with SigtermFlag() as sigterm:
        for epoch in range(len(history) + 1, trainer_cfg.epochs + 1):
            adapter.reseed(epoch_seed(seed, epoch))
            order = epoch_order(seed, epoch, len(x_train))
            start = time.perf_counter()
            train_loss, train_accuracy = adapter.train_epoch(x_train, y_train, order, lambda: sigterm.raised)
            epoch_time = time.perf_counter() - start
            if sigterm.raised:
                raise Interrupted(f"interrupted by SIGTERM in epoch {epoch}; rerun to resume after epoch {epoch - 1}")
            elapsed += epoch_time
            val_loss, val_accuracy = predict_metrics(adapter, x_val, y_val, trainer_cfg.eval_batch_size)
            hits = ranking.score(adapter, trainer_cfg.eval_batch_size) if ranking else None
            record = EpochRecord(epoch, train_loss, train_accuracy, val_loss, val_accuracy, epoch_time, elapsed, hits)
            history.append(record)
            save_checkpoint(adapter, out_dir, history)
            log.info(
                "epoch %d/%d: loss %.4f acc %.4f | val loss %.4f acc %.4f%s | %.1f s",
                epoch, trainer_cfg.epochs, train_loss, train_accuracy, val_loss, val_accuracy,
                f" | HR@{ranking.k} {hits:.4f}" if ranking else "", epoch_time,
            )
    return history
