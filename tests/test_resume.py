"""Checkpoint and resume: a training run stopped by SIGTERM (SLURM preemption or time
limit) or SIGKILL, then rerun, ends with the history of a run never interrupted.

Each run is `scripts/train.py` in its own process, as a SLURM job runs it. The
convnet has dropout, the hard case: its masks must not depend on where a run
was interrupted.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, PROJECT_ROOT, SCRIPTS_DIR, project_env
from fwbench.cli import EXIT_INTERRUPTED
from fwbench.config import compose_config, run_dir
from fwbench.frameworks import registry
from fwbench.training.loop import CHECKPOINT_DIR, PROGRESS_FILE, fit
from fwbench.training.run import HISTORY_FILE

FRAMEWORKS = sorted(registry.FRAMEWORKS)
MODEL = "convnet"
SEED = 0
EPOCHS = 3
# Interrupt once this many epochs are logged (the log line follows the checkpoint).
INTERRUPT_AFTER = 1
EXPERIMENT = ("experiment=smoke", f"model={MODEL}", f"seed={SEED}", f"trainer.epochs={EPOCHS}")
EPOCH_LOGGED = re.compile(r"epoch (\d+)/\d+:")
# What must match exactly; the timings may not.
COMPARED = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module", params=FRAMEWORKS)
def framework(request) -> str:
    return request.param


def overrides(framework: str, data_base: Path, out_base: Path) -> list[str]:
    return [
        *EXPERIMENT,
        f"framework={framework}",
        f"paths.data={data_base / 'data'}",
        f"paths.results={out_base / 'results'}",
        f"paths.mlflow={out_base / 'mlruns'}",
    ]


def train_command(framework: str, data_base: Path, out_base: Path) -> list[str]:
    return [sys.executable, str(SCRIPTS_DIR / "train.py"), *overrides(framework, data_base, out_base)]


def output_dir(framework: str, data_base: Path, out_base: Path) -> Path:
    cfg = compose_config(CONFIG_DIR, overrides(framework, data_base, out_base))
    return run_dir(cfg, framework, MODEL, SEED)


def train(framework: str, data_base: Path, out_base: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_command(framework, data_base, out_base), cwd=PROJECT_ROOT, env=project_env(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )


def train_and_interrupt(framework: str, data_base: Path, out_base: Path, signum: int) -> tuple[int, int, str]:
    """Start a run, send `signum` as soon as it logs epoch INTERRUPT_AFTER.

    Returns (exit code, epochs logged before the signal, the whole log).
    """
    process = subprocess.Popen(
        train_command(framework, data_base, out_base), cwd=PROJECT_ROOT, env=project_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log, logged = [], 0
    for line in process.stdout:
        log.append(line)
        match = EPOCH_LOGGED.search(line)
        if match:
            logged = int(match.group(1))
            if logged >= INTERRUPT_AFTER:
                process.send_signal(signum)
                break
    rest, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    return process.returncode, logged, "".join(log) + rest


def compared(history: list[dict]) -> list[dict]:
    return [{key: record[key] for key in COMPARED} for record in history]


def read_history(run: Path) -> list[dict]:
    return compared(json.loads((run / HISTORY_FILE).read_text())["history"])


def checkpointed_epochs(run: Path) -> int:
    progress = run / CHECKPOINT_DIR / PROGRESS_FILE
    assert progress.exists(), f"no checkpoint at {progress}"
    return len(json.loads(progress.read_text())["history"])


@pytest.fixture(scope="module")
def reference(framework, smoke_data, tmp_path_factory) -> list[dict]:
    """The history of an uninterrupted run."""
    out_base = tmp_path_factory.mktemp(f"reference-{framework}")
    result = train(framework, smoke_data, out_base)
    assert result.returncode == 0, result.stderr
    history = read_history(output_dir(framework, smoke_data, out_base))
    assert [record["epoch"] for record in history] == list(range(1, EPOCHS + 1))
    return history


def resume_and_check(framework: str, data_base: Path, out_base: Path, checkpointed: int, reference: list[dict]) -> None:
    result = train(framework, data_base, out_base)
    assert result.returncode == 0, result.stderr
    assert f"resuming after epoch {checkpointed}" in result.stderr
    assert read_history(output_dir(framework, data_base, out_base)) == reference


@pytest.mark.slow
def test_sigterm_stops_at_the_checkpoint_and_resumes_to_the_same_history(framework, reference, smoke_data, tmp_path):
    code, logged, log = train_and_interrupt(framework, smoke_data, tmp_path, signal.SIGTERM)
    run = output_dir(framework, smoke_data, tmp_path)

    assert code == EXIT_INTERRUPTED, log
    assert "interrupted by SIGTERM" in log
    # The epoch in progress is abandoned: the checkpoint holds the finished ones only.
    checkpointed = checkpointed_epochs(run)
    assert logged <= checkpointed < EPOCHS
    assert not (run / HISTORY_FILE).exists()

    resume_and_check(framework, smoke_data, tmp_path, checkpointed, reference)


@pytest.mark.slow
def test_sigkill_loses_at_most_the_current_epoch(framework, reference, smoke_data, tmp_path):
    code, logged, log = train_and_interrupt(framework, smoke_data, tmp_path, signal.SIGKILL)
    run = output_dir(framework, smoke_data, tmp_path)

    assert code == -signal.SIGKILL, log
    checkpointed = checkpointed_epochs(run)
    assert logged <= checkpointed < EPOCHS
    assert not (run / HISTORY_FILE).exists()

    resume_and_check(framework, smoke_data, tmp_path, checkpointed, reference)


class CountingAdapter:
    """A stand-in for a framework adapter whose whole state is the epochs it has trained."""

    def __init__(self) -> None:
        self.epochs_trained = 0
        self.calls = 0

    def reseed(self, seed: int) -> None:
        pass

    def train_epoch(self, x, y, order, should_stop) -> tuple[float, float]:
        self.epochs_trained += 1
        self.calls += 1
        return 1.0, 0.5

    def predict_logits(self, x, batch_size: int) -> np.ndarray:
        return np.zeros((len(x), 2), dtype=np.float32)

    def save_checkpoint(self, directory: Path) -> None:
        (Path(directory) / "epochs.txt").write_text(str(self.epochs_trained))

    def load_checkpoint(self, directory: Path) -> None:
        self.epochs_trained = int((Path(directory) / "epochs.txt").read_text())


def test_a_kill_between_the_checkpoint_renames_loses_no_finished_epoch(tmp_path):
    data = {split: (np.zeros((4, 1), np.float32), np.zeros(4, np.int64)) for split in ("train", "val")}
    fit(CountingAdapter(), data, OmegaConf.create({"epochs": 2, "eval_batch_size": 4}), SEED, tmp_path)
    # save_checkpoint of epoch 3 moved the old checkpoint aside and was killed
    # before putting the new one in place.
    (tmp_path / CHECKPOINT_DIR).rename(tmp_path / f"{CHECKPOINT_DIR}.old")

    resumed = CountingAdapter()
    history = fit(resumed, data, OmegaConf.create({"epochs": 3, "eval_batch_size": 4}), SEED, tmp_path)

    assert resumed.calls == 1
    assert resumed.epochs_trained == 3
    assert [record.epoch for record in history] == [1, 2, 3]
