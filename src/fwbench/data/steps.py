"""The pipeline's data steps as functions of the composed config (scripts/ call these)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from fwbench.config import processed_dir, raw_dir
from fwbench.data.download import download_dataset
from fwbench.data.preprocess import preprocess

log = logging.getLogger(__name__)


def download_step(cfg: DictConfig) -> None:
    """The dataset's files, or the one named by `download_file` (the pipeline runs a job per file)."""
    paths = download_dataset(cfg.dataset, raw_dir(cfg), only=cfg.download_file)
    log.info("%d verified file(s) in %s", len(paths), raw_dir(cfg))


def preprocess_step(cfg: DictConfig) -> None:
    # The split seed is the dataset's, not the run's: every run seed trains on the same split.
    manifest = preprocess(cfg.dataset, raw_dir(cfg), processed_dir(cfg), cfg.dataset.val_size, seed=cfg.dataset.split_seed)
    log.info("wrote %s: %s", processed_dir(cfg), {k: v["shape"] for k, v in manifest["arrays"].items()})
