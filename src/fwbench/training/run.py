"""One training run and one evaluation, as the pipeline's train and evaluate jobs do them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fwbench.config import processed_dir, run_dir
from fwbench.data.preprocess import load_split, read_manifest
from fwbench.export import export_and_reload
from fwbench.runtime import applied_threads, configure_framework, machine_info, package_versions, scheduler_info, write_json_atomic
from fwbench.tracking import child_run
from fwbench.training.loop import fit, time_to_accuracy
from fwbench.training.metrics import classification_report

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"

def make_adapter(cfg: DictConfig, input_shape, num_classes: int):
    """The framework adapter; imported lazily so a TF job never loads torch and vice versa."""
    if cfg.framework.name == "tf":
        from fwbench.training.keras_adapter import KerasAdapter

        return KerasAdapter(cfg.model.name, input_shape, num_classes, cfg.trainer)
    from fwbench.training.torch_adapter import TorchAdapter

    return TorchAdapter(cfg.model.name, input_shape, num_classes, cfg.trainer)

def run_identity(cfg: DictConfig) -> dict:
    return {
        "experiment": cfg.experiment.name,
        "dataset": cfg.dataset.name,
        "framework": cfg.framework.name,
        "model": cfg.model.name,
        "seed": int(cfg.seed),
    }

def train_variant(cfg: DictConfig, out_dir: Path | None = None) -> dict:
    """Train one framework x model x seed; write model/, checkpoint/ and history.json.

    Runs as an MLflow child run: per-epoch metrics, history.json and the model
    go there too, and history.json names the run (mlflow_run_id).
    """
    out_dir = Path(out_dir) if out_dir else run_dir(cfg, cfg.framework.name, cfg.model.name, cfg.seed)
    with child_run(cfg, "train") as tracked:
        configure_framework(cfg.framework.name, cfg.threads, cfg.seed)
        data_dir = processed_dir(cfg)
        manifest = read_manifest(data_dir)
        data = {split: load_split(data_dir, split) for split in ("train", "val")}
        input_shape = data["train"][0].shape[1:]
        adapter = make_adapter(cfg, input_shape, manifest["num_classes"])
        started = time.time()
        history = fit(adapter, data, cfg.trainer, cfg.seed, out_dir)
        adapter.save_model(out_dir / MODEL_DIR)
        result = {
            **run_identity(cfg),
            "history": [vars(record) for record in history],
            "final": vars(history[-1]),
            "time_to_accuracy_s": time_to_accuracy(history, list(cfg.dataset.get("accuracy_targets", []))),
            "parameter_count": adapter.parameter_count,
            "device": adapter.device,
            "threads": applied_threads(cfg.framework.name),
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
        })
        write_json_atomic(out_dir / HISTORY_FILE, result)
        tracked.log_artifact(out_dir / HISTORY_FILE)
        tracked.log_model(adapter.model, data["val"][0])
        log.info("wrote %s", out_dir / HISTORY_FILE)
    return result

def load_logits_fn(cfg: DictConfig, model_dir: Path, input_shape, num_classes: int):
    """(NHWC arrays -> logits function, the device it runs on) for the saved model."""
    if cfg.framework.name == "tf":
        from fwbench.training.keras_adapter import load_keras_logits_fn

        return load_keras_logits_fn(model_dir)
    from fwbench.training.torch_adapter import load_torch_logits_fn

    return load_torch_logits_fn(model_dir, cfg.model.name, input_shape, num_classes)

def evaluate_variant(cfg: DictConfig, out_dir: Path | None = None) -> dict:
    """Test-set accuracy, loss, per-class accuracy, confusion matrix, and the export/reload check.

    Runs as an MLflow child run holding the same test metrics; metrics.json names it.
    """
    out_dir = Path(out_dir) if out_dir else run_dir(cfg, cfg.framework.name, cfg.model.name, cfg.seed)
    with child_run(cfg, "evaluate") as tracked:
        configure_framework(cfg.framework.name, cfg.threads, cfg.seed)
        data_dir = processed_dir(cfg)
        manifest = read_manifest(data_dir)
        x_test, y_test = load_split(data_dir, "test")
        predict, device = load_logits_fn(cfg, out_dir / MODEL_DIR, x_test.shape[1:], manifest["num_classes"])
        logits = predict(x_test, cfg.trainer.eval_batch_size)
        metrics = {**run_identity(cfg), **classification_report(logits, y_test, manifest["num_classes"])}
        metrics["device"] = device
        metrics["scheduler"] = scheduler_info()
        metrics["class_names"] = list(manifest.get("class_names", []))
        metrics["export"] = export_and_reload(
            cfg.framework.name, cfg.model.name, out_dir / MODEL_DIR, out_dir,
            x_test, logits, manifest["num_classes"], cfg.trainer.eval_batch_size,
        )
        metrics["mlflow_run_id"] = tracked.run_id
        class_names = metrics["class_names"] or [str(i) for i in range(len(metrics["per_class_accuracy"]))]
        tracked.log_metrics({
            "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"],
            **{f"test_class_accuracy/{name}": value for name, value in zip(class_names, metrics["per_class_accuracy"])},
            **{f"export/{key}": value for key, value in metrics["export"].items() if key != "export_format"},
        })
        write_json_atomic(out_dir / METRICS_FILE, metrics)
        tracked.log_artifact(out_dir / METRICS_FILE)
        log.info("test accuracy %.4f -> %s", metrics["test_accuracy"], out_dir / METRICS_FILE)
    return metrics
