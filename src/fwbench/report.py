"""The comparison report, built from the pipeline's own result files.

Reads every history.json and metrics.json of the experiment grid into one
table, aggregates over seeds, and writes a self-contained HTML page (styles
inline, no network) and a markdown twin.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fwbench.config import experiment_grid, report_dir, run_dir
from fwbench.errors import DataError

log = logging.getLogger(__name__)

FRAMEWORK_NAMES = {"tf": "TensorFlow", "torch": "PyTorch"}


def collect_results(cfg: DictConfig) -> pd.DataFrame:
    """One row per (framework, model, seed): final test metrics, epoch times, provenance."""
    rows = []
    for framework, model, seed in experiment_grid(cfg):
        directory = run_dir(cfg, framework, model, seed)
        history = _read_json(directory / "history.json")
        metrics = _read_json(directory / "metrics.json")
        epoch_times = [epoch["epoch_time_s"] for epoch in history["history"]]
        rows.append({
            "framework": framework,
            "model": model,
            "seed": seed,
            "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"],
            "val_accuracy": history["final"]["val_accuracy"],
            "epochs": len(epoch_times),
            "epoch_time_s": sum(epoch_times) / len(epoch_times),
            "parameter_count": history["parameter_count"],
            "device": history["device"],
            "threads": history["threads"]["intra_op"],
            "packages": history["packages"],
            "machine": history["machine"],
        })
    return pd.DataFrame(rows)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"missing result file {path}: run the pipeline (snakemake) to produce it") from None


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per framework x model."""
    grouped = results.groupby(["model", "framework"], sort=False)
    summary = grouped.agg(
        seeds=("seed", "count"),
        accuracy_mean=("test_accuracy", "mean"),
        accuracy_std=("test_accuracy", "std"),
        epoch_time_mean=("epoch_time_s", "mean"),
        epoch_time_std=("epoch_time_s", "std"),
        parameter_count=("parameter_count", "first"),
    ).reset_index()
    return summary


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    return [
        [
            row.model,
            FRAMEWORK_NAMES.get(row.framework, row.framework),
            str(row.seeds),
            f"{_fmt(row.accuracy_mean, 4)} ± {_fmt(row.accuracy_std, 4)}",
            f"{_fmt(row.epoch_time_mean, 2)} ± {_fmt(row.epoch_time_std, 2)}",
            f"{row.parameter_count:,}",
        ]
        for row in summary.itertuples()
    ]


SUMMARY_HEADER = ["model", "framework", "seeds", "test accuracy (mean ± sd)", "epoch time, s (mean ± sd)", "parameters"]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def provenance(cfg: DictConfig, results: pd.DataFrame) -> dict[str, str]:
    first = results.iloc[0]
    packages = {}
    for versions in results["packages"]:
        packages.update(versions)
    machine = first["machine"]
    return {
        "experiment": cfg.experiment.name,
        "dataset": cfg.dataset.name,
        "git commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": f"{machine['cpu_model']}, {machine['cpu_count']} cores ({machine['hostname']})",
        "device": ", ".join(sorted(set(results["device"]))),
        "threads per job": ", ".join(str(t) for t in sorted(set(results["threads"]))),
        "python": machine["python"],
        "packages": ", ".join(f"{name} {version}" for name, version in sorted(packages.items())),
        "initialisation": "each framework's default (not matched)",
        "trainer": json.dumps(OmegaConf.to_container(cfg.trainer, resolve=True), sort_keys=True),
    }


def render_markdown(title: str, rows: list[list[str]], facts: dict[str, str]) -> str:
    lines = [f"# {title}", "", "## Test accuracy and training time", ""]
    lines.append("| " + " | ".join(SUMMARY_HEADER) + " |")
    lines.append("|" + "---|" * len(SUMMARY_HEADER))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Provenance", ""]
    lines += [f"- **{key}**: {value}" for key, value in facts.items()]
    return "\n".join(lines) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1a1a1a; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #bbb; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #eef; }
dt { font-weight: bold; margin-top: 0.4rem; }
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(title: str, rows: list[list[str]], facts: dict[str, str]) -> str:
    facts_html = "".join(
        f"<dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>" for key, value in facts.items()
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<h2 id='accuracy'>Test accuracy and training time</h2>"
        f"{_html_table(SUMMARY_HEADER, rows)}"
        f"<h2 id='provenance'>Provenance</h2><dl>{facts_html}</dl>"
        "</body></html>\n"
    )


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def report_step(cfg: DictConfig) -> Path:
    results = collect_results(cfg)
    rows = summary_rows(summarize(results))
    facts = provenance(cfg, results)
    title = f"fwbench: TensorFlow vs PyTorch — {cfg.experiment.name} experiment on {cfg.dataset.name}"
    out_dir = report_dir(cfg)
    write_text_atomic(out_dir / "comparison.md", render_markdown(title, rows, facts))
    write_text_atomic(out_dir / "comparison.html", render_html(title, rows, facts))
    log.info("report written to %s", out_dir / "comparison.html")
    return out_dir / "comparison.html"
