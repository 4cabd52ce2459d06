"""One evaluation, as the pipeline's evaluate jobs do it: test metrics of a trained model, and its export."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fwbench.config import processed_dir, run_dir
from fwbench.data.preprocess import load_split, read_manifest
from fwbench.export import export_and_reload
from fwbench.runtime import scheduler_info, write_json_atomic
from fwbench.tracking.runs import child_run
from fwbench.training.metrics import classification_report, hit_ratio
from fwbench.training.run import MODEL_DIR, configure_framework, run_identity

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def evaluate_variant(cfg: DictConfig, out_dir: Path | None = None) -> dict:
    """Test-set accuracy, loss, per-class accuracy, confusion matrix, and the export/reload check.

    Runs as an MLflow child run holding the same test metrics; metrics.json names it.
    """
    out_dir = Path(out_dir) if out_dir else run_dir(cfg, cfg.framework.name, cfg.model.name, cfg.seed)
    with child_run(cfg, "evaluate") as tracked:
        framework = configure_framework(cfg)
        data_dir = processed_dir(cfg)
        manifest = read_manifest(data_dir)
        x_test, y_test = load_split(data_dir, "test")
        predict, device = framework.load_logits_fn(out_dir / MODEL_DIR, cfg.model, x_test.shape[1:],
                                                   manifest["num_classes"])
        logits = predict(x_test, cfg.trainer.eval_batch_size)
        metrics = {**run_identity(cfg), **classification_report(logits, y_test, manifest["num_classes"])}
        if manifest.get("candidates_per_user"):  # a leave-one-out ranking test split (MovieLens)
            k = int(cfg.dataset.hit_ratio_k)
            metrics[f"test_hit_ratio_at_{k}"] = hit_ratio(logits, int(manifest["candidates_per_user"]), k)
        metrics["device"] = device
        metrics["scheduler"] = scheduler_info()
        metrics["class_names"] = list(manifest.get("class_names", []))
        metrics["export"] = export_and_reload(
            cfg.framework.name, cfg.model, out_dir / MODEL_DIR, out_dir,
            x_test, logits, manifest["num_classes"], cfg.trainer.eval_batch_size,
        )
        metrics["mlflow_run_id"] = tracked.run_id
        class_names = metrics["class_names"] or [str(i) for i in range(len(metrics["per_class_accuracy"]))]
        tracked.log_metrics({
            "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"],
            **{key: value for key, value in metrics.items() if key.startswith("test_hit_ratio")},
            **{f"test_class_accuracy/{name}": value for name, value in zip(class_names, metrics["per_class_accuracy"])},
            **{f"export/{key}": value for key, value in metrics["export"].items() if key != "export_format"},
        })
        write_json_atomic(out_dir / METRICS_FILE, metrics)
        tracked.log_artifact(out_dir / METRICS_FILE)
        log.info("test accuracy %.4f -> %s", metrics["test_accuracy"], out_dir / METRICS_FILE)
    return metrics
