"""One training run, as the pipeline's train jobs do it (fwbench.evaluation evaluates it)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fwbench.config import processed_dir, run_dir
from fwbench.data.preprocess import load_split, read_manifest
from fwbench.errors import ConfigError
from fwbench.frameworks import registry as frameworks
from fwbench.runtime import machine_info, package_versions, scheduler_info, write_json_atomic
from fwbench.tracking.runs import child_run
from fwbench.training.loop import RankingCheck, fit, time_to_target

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
MODEL_DIR = "model"


def make_adapter(cfg: DictConfig, input_shape, num_classes: int):
    """The framework's training adapter (its module is imported here: a TF job never loads torch)."""
    return frameworks.load(cfg.framework.name).Adapter(cfg.model, input_shape, num_classes, cfg.trainer)


def configure_framework(cfg: DictConfig):
    """Import the job's framework, set its threads and seed with determinism on; returns its module."""
    framework = frameworks.load(cfg.framework.name)
    framework.configure(cfg.threads, cfg.seed, tf32=False, deterministic=True)
    return framework


def run_identity(cfg: DictConfig) -> dict:
    return {
        "experiment": cfg.experiment.name,
        "dataset": cfg.dataset.name,
        "framework": cfg.framework.name,
        "model": cfg.model.name,
        "seed": int(cfg.seed),
    }


def ranking_check(cfg: DictConfig, data_dir: Path, manifest: dict) -> RankingCheck | None:
    """The dataset's leave-one-out ranking split (MovieLens' test users), scored after every epoch for the
    time to its hit-ratio targets; None for a dataset without one."""
    if not manifest.get("candidates_per_user"):
        return None
    x_test, _ = load_split(data_dir, "test")
    return RankingCheck(x_test, int(manifest["candidates_per_user"]), int(cfg.dataset.hit_ratio_k))


def time_to_targets(cfg: DictConfig, history, ranking: RankingCheck | None) -> dict:
    """Seconds of training to each target of the dataset's config (None: not reached), by metric:
    val accuracy always; the ranking split's hit ratio @ k where the dataset has one."""
    times = {"time_to_accuracy_s": time_to_target(history, "val_accuracy", list(cfg.dataset.get("accuracy_targets", [])))}
    if ranking:
        times["hit_ratio_k"] = ranking.k
        times["time_to_hit_ratio_s"] = time_to_target(history, "hit_ratio", list(cfg.dataset.hit_ratio_targets))
    return times


def train_variant(cfg: DictConfig, out_dir: Path | None = None) -> dict:
    """Train one framework x model x seed; write model/, checkpoint/ and history.json.

    Runs as an MLflow child run: per-epoch metrics, history.json and the model
    go there too, and history.json names the run (mlflow_run_id).
    """
    if cfg.dataset.get("synthetic", False):
        raise ConfigError(f"model {cfg.model.name!r} reads synthetic {cfg.dataset.name} data here, which carries no "
                          "signal: it is benched, never trained; accepted is real data (dataset.synthetic=false)")
    out_dir = Path(out_dir) if out_dir else run_dir(cfg, cfg.framework.name, cfg.model.name, cfg.seed)
    with child_run(cfg, "train") as tracked:
        framework = configure_framework(cfg)
        data_dir = processed_dir(cfg)
        manifest = read_manifest(data_dir)
        data = {split: load_split(data_dir, split) for split in ("train", "val")}
        input_shape = data["train"][0].shape[1:]
        adapter = make_adapter(cfg, input_shape, manifest["num_classes"])
        ranking = ranking_check(cfg, data_dir, manifest)
        started = time.time()
        history = fit(adapter, data, cfg.trainer, cfg.seed, out_dir, ranking)
        adapter.save_model(out_dir / MODEL_DIR)
        result = {
            **run_identity(cfg),
            "history": [vars(record) for record in history],
            "final": vars(history[-1]),
            **time_to_targets(cfg, history, ranking),
            "parameter_count": adapter.parameter_count,
            "device": adapter.device,
            "threads": framework.applied_threads(),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "data_manifest_sha256": {name: entry["sha256"] for name, entry in manifest["arrays"].items()},
            "packages": package_versions(cfg.framework.name),
            "machine": machine_info(),
            "scheduler": scheduler_info(),
            "wall_time_s": time.time() - started,
            "mlflow_run_id": tracked.run_id,
        }
        tracked.log_history(result["history"], step_key="epoch")
        tracked.log_metrics({
            "parameter_count": result["parameter_count"],
            "wall_time_s": result["wall_time_s"],
            **{f"time_to_accuracy_s/{target}": seconds for target, seconds in result["time_to_accuracy_s"].items()},
            **{f"time_to_hit_ratio_at_{ranking.k}_s/{target}": seconds
               for target, seconds in result.get("time_to_hit_ratio_s", {}).items()},
        })
        write_json_atomic(out_dir / HISTORY_FILE, result)
        tracked.log_artifact(out_dir / HISTORY_FILE)
        tracked.log_model(adapter.model, data["val"][0])
        log.info("wrote %s", out_dir / HISTORY_FILE)
    return result
