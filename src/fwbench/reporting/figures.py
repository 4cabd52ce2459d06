"""Figures of the report: PNG files, colour-blind safe (Okabe-Ito colours plus
hatching/markers, so the frameworks differ without colour), axes with units."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fwbench.bench.table import process_means  # noqa: E402
from fwbench.frameworks.registry import FRAMEWORKS  # noqa: E402
from fwbench.reporting.tables import subset  # noqa: E402
from fwbench.stats import mean_ci  # noqa: E402

# Each framework's colour, hatch, marker and line style, and its name as the legend's label.
STYLE = {name: {"label": spec.display_name, **spec.style} for name, spec in FRAMEWORKS.items()}
DPI = 110
# The bars of one model share this much of the x axis between them.
GROUP_WIDTH = 0.8


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _empty(path: Path, message: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return _save(fig, path)


def accuracy_figure(training: pd.DataFrame, models: list[str], path: Path) -> Path:
    """Mean test accuracy per model and framework with 95 % t intervals over seeds."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(len(models))
    present = [framework for framework in STYLE if (training["framework"] == framework).any()]
    width = GROUP_WIDTH / max(len(present), 1)
    for index, framework in enumerate(present):
        style = STYLE[framework]
        cis = [mean_ci(subset(training, framework=framework, model=m)["test_accuracy"]) for m in models]
        means = [ci.mean * 100 for ci in cis]
        errors = [0 if np.isnan(ci.half_width) else ci.half_width * 100 for ci in cis]
        offset = (index - (len(present) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=errors, capsize=4, label=style["label"],
               color=style["color"], hatch=style["hatch"], edgecolor="black")
    ax.set_xticks(x, models)
    ax.set_ylabel("test accuracy (%)")
    low = training["test_accuracy"].min() * 100
    ax.set_ylim(max(0, low - 5), 100)
    ax.set_title("Test accuracy, mean and 95 % CI over seeds")
    ax.legend()
    return _save(fig, path)


def learning_curves_figure(curves: pd.DataFrame, models: list[str], path: Path) -> Path:
    """Validation accuracy per epoch, mean over seeds."""
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for framework, style in STYLE.items():
            mean = subset(curves, framework=framework, model=model).groupby("epoch")["val_accuracy"].mean()
            if not mean.empty:
                ax.plot(mean.index, mean.values * 100, label=style["label"], color=style["color"],
                        marker=style["marker"], linestyle=style["linestyle"])
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
    axes[0][0].legend()
    return _save(fig, path)


def bench_figure(bench: pd.DataFrame | None, metric: str, ylabel: str, title: str, path: Path,
                 log_scale: bool = False, panels: dict[str, str] | None = None) -> Path:
    """Mean over processes per framework:mode, one panel per model (`panels`: model -> panel title, in panel
    order; default: the table's models, titled by name); error bars span the process means."""
    if bench is None or bench.empty or metric not in bench.columns:
        return _empty(path, f"{title}: not measured in this run")
    panels = panels or {model: model for model in dict.fromkeys(bench["model"])}
    models = [model for model in panels if (bench["model"] == model).any()]
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = bench[bench["model"] == model]
        labels, medians, lower, upper, colours, hatches = [], [], [], [], [], []
        for (framework, mode), group in rows.groupby(["framework", "mode"], sort=False):
            per_process = process_means(group, metric)
            centre = per_process.mean()
            labels.append(f"{framework}:{mode}")
            medians.append(centre)
            lower.append(centre - per_process.min())
            upper.append(per_process.max() - centre)
            colours.append(STYLE[framework]["color"])
            hatches.append(STYLE[framework]["hatch"])
        bars = ax.bar(range(len(labels)), medians, yerr=[lower, upper], capsize=3, color=colours, edgecolor="black")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_title(panels[model], fontsize="medium")
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
    fig.suptitle(f"{title} (mean of process means; bars: lowest to highest process)")
    return _save(fig, path)


# Line widths of a sweep's lines by thread count (more threads, thicker), so lines differ without colour.
SWEEP_LINE_WIDTHS = (1.0, 2.2, 3.4, 4.6)


def scaling_figure(bench: pd.DataFrame, axis: str, lines_by: str | None, fixed: dict, xlabel: str, title: str,
                   path: Path, metric: str = "train_samples_per_s", ylabel: str = "training throughput (samples/s)"
                   ) -> Path:
    """`metric` against `axis` (batch_size or threads), one panel per model, one line per framework:mode (and
    per value of `lines_by`, if given), log axes; the band is the 95 % t interval of the mean over processes.

    `fixed` holds other columns at one value (e.g. the reference batch size on a threads plot).
    """
    rows = bench
    for column, value in fixed.items():
        rows = rows[rows[column] == value]
    if rows.empty:
        return _empty(path, f"{title}: not measured in this run")
    models = list(dict.fromkeys(rows["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    keys = ["framework", "mode", *([lines_by] if lines_by else [])]
    widths = {value: SWEEP_LINE_WIDTHS[i % len(SWEEP_LINE_WIDTHS)]
              for i, value in enumerate(sorted(rows[lines_by].unique()))} if lines_by else {}
    for ax, model in zip(axes[0], models):
        for key, group in rows[rows["model"] == model].groupby(keys, sort=False):
            framework, mode = key[0], key[1]
            points = sorted(group[axis].unique())
            cis = [mean_ci(process_means(group[group[axis] == point], metric)) for point in points]
            means = np.array([ci.mean for ci in cis])
            low = np.array([ci.low if np.isfinite(ci.low) else ci.mean for ci in cis])
            high = np.array([ci.high if np.isfinite(ci.high) else ci.mean for ci in cis])
            style = STYLE[framework]
            label = f"{framework}:{mode}" + (f", {lines_by.replace('_', ' ')} {key[2]}" if lines_by else "")
            ax.plot(points, means, color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
                    linewidth=widths.get(key[2], 1.6) if lines_by else 1.6, label=label)
            ax.fill_between(points, np.clip(low, means * 1e-3, None), high, color=style["color"], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted(rows[axis].unique())
        ax.set_xticks(ticks, [str(tick) for tick in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(model)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} (mean over processes; band: 95 % CI)")
    return _save(fig, path)
