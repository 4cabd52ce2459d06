"""Assemble the comparison report from the pipeline's result files."""

from __future__ import annotations

import logging
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fwbench import claims as claim_catalogue
from fwbench import sweep
from fwbench.bench.contention import BUSY_SHARE
from fwbench.bench.grid import all_frameworks, bench_models, bench_only_frameworks, control_variants, reference_setting
from fwbench.bench.outputs import PROCESS_COLUMNS
from fwbench.bench.table import process_means, within_process_cv
from fwbench.bench.timing import coefficient_of_variation
from fwbench.config import dataset_of, is_synthetic, model_input_kind, report_dir, trained_models
from fwbench.errors import DataError
from fwbench.frameworks import registry as frameworks
from fwbench.models.architecture import WORKLOADS, flatten_size
from fwbench.reporting import figures, sweep_report
from fwbench.reporting.cells import fmt, over_processes_cell
from fwbench.runtime import git_state
from fwbench.reporting.render import Section, Table, render_html, render_markdown
from fwbench.reporting.tables import (
    TARGETS_SET, bench_table, curves_table, export_table, load_runs, results_long, subset, training_table,
)
from fwbench.runtime import write_text_atomic
from fwbench.stats import mean_ci

log = logging.getLogger(__name__)

FIGURES = {
    "accuracy": "accuracy.png",
    "curves": "learning_curves.png",
    "throughput": "throughput.png",
    "first_step": "first_step.png",
    "latency": "latency.png",
    "memory": "memory.png",
}
# The article's MNIST input: 28x28 grey images, ten classes.
ARTICLE_INPUT_SHAPE = (28, 28, 1)
ARTICLE_CLASSES = 10
# The article's chapter-6 network as printed flattens 16 feature maps of 6x6.
ARTICLE_LENET_FLATTEN = 16 * 6 * 6
CLAIMS_TABLE = "claims.csv"


def model_framework_groups(table: pd.DataFrame, models: list[str]):
    """(model, framework, rows) for every model x framework present in the table, in report order."""
    for model in models:
        for framework in frameworks.FRAMEWORKS:
            group = subset(table, framework=framework, model=model)
            if not group.empty:
                yield model, framework, group


# --- sections -----------------------------------------------------------------

def summary_section(results: list, margins: claim_catalogue.Margins, confidence: float,
                    synthetic: list[str]) -> Section:
    rows = []
    for result in results:
        if result.status == claim_catalogue.NOT_MEASURED:
            verdict = "not measured here"
        else:
            counts = result.counts
            verdict = ", ".join(f"{name} in {count}" for name, count in counts.items() if count) or "no conditions"
            verdict = f"{dominant_verdict(counts)}: {verdict}"
        rows.append([result.claim_id, result.text, verdict, result.overall])
    for claim in claim_catalogue.UNMEASURED_CLAIMS:
        rows.append([claim.id, claim.text, "not measured by this pipeline", claim.reason])
    return Section(
        "summary", "Summary: the article's claims and this run's verdicts",
        [f"Each claim is tested per condition (device x model x mode pairing) with a {100 * confidence:g} % "
         "interval of the ratio (or difference) between the frameworks, built over independent processes: "
         "bench processes for speed and memory, training seeds for accuracy and export; windows inside one "
         "process are averaged first, never counted as trials. Practical margins: speed "
         f"±{100 * margins.speed:g} %, memory ±{100 * margins.memory:g} % (a ratio within "
         f"[1/{1 + margins.speed:g}, {1 + margins.speed:g}] does not matter), accuracy "
         f"±{100 * margins.accuracy:g} points. A condition is 'supported' when its whole interval lies beyond "
         "the margin in the claimed direction, 'contradicted' when it lies beyond it the other way, "
         "'no meaningful difference' when it lies wholly inside the margin, 'inconclusive' otherwise. The "
         "verdict cell counts conditions; the detail column says where the verdict flips.", *synthetic],
        [Table(["claim", "the article says", "verdict (conditions)", "detail"], rows, "claims", verdict_columns=(2,))],
    )


def controls_section(controls: claim_catalogue.ControlResults, margins: claim_catalogue.Margins) -> Section:
    rows = [
        [r.device, r.model, r.scope, r.metric, f"{fmt(r.estimate, 3)} [{fmt(r.ci_low, 3)}, {fmt(r.ci_high, 3)}]",
         f"{r.n_a} / {r.n_b}", r.verdict]
        for r in controls.rows
    ]
    return Section(
        "controls", "A/A controls: each framework's default mode against itself",
        ["Each framework's default mode on the control model runs an even number of processes; its even "
         "replicates are compared with its odd ones like any claim (throughput with the speed margin "
         f"±{100 * margins.speed:g} %, anonymous memory with ±{100 * margins.memory:g} %). Both sides are the "
         "same code, so a control must come out 'no meaningful difference' or 'inconclusive'; 'supported' "
         "or 'contradicted' means this machine moved more between processes than the intervals allow.",
         *controls.notes],
        [Table(["device", "model", "control", "metric", "ratio [95 % CI]", "processes a / b", "verdict"], rows,
               verdict_columns=(6,))],
    )


def unsteady_warning(controls: claim_catalogue.ControlResults, bench: pd.DataFrame | None) -> Section | None:
    """The report's first section when an A/A control failed: its verdicts are not to be trusted."""
    failed = controls.failed
    if not failed:
        return None
    named = "; ".join(f"{r.scope} on {r.model} ({r.metric}): {r.verdict}, ratio {fmt(r.estimate, 3)} "
                      f"[{fmt(r.ci_low, 3)}, {fmt(r.ci_high, 3)}]" for r in failed)
    return Section(
        "unsteady", "Warning: this run's machine was too unsteady for its verdicts",
        [f"An A/A control found a difference between a variant and itself, so this run's machine changed "
         f"more between processes than the intervals allow, and the speed and memory verdicts below may "
         f"describe the machine rather than the frameworks. Failed: {named}. {contention_note(bench)}"
         "Rerun on an idle machine; where steal time was high, at another time or on another host."],
        css_class="warning",
    )


def process_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """One row per bench process (its first window's): what a process recorded once, such as its machine."""
    return bench.drop_duplicates(list(PROCESS_COLUMNS))


def mixed_machines_warning(bench: pd.DataFrame | None) -> Section | None:
    """The report's first section when the bench processes ran on more than one kind of machine."""
    if bench is None:
        return None
    processes = process_rows(bench).fillna({"gpu_model": ""})
    kinds = processes.groupby(["cpu_model", "gpu_model"], sort=False).size()
    if len(kinds) < 2:
        return None
    named = "; ".join(f"{cpu}{f' with {gpu}' if gpu else ''} in {n} of {len(processes)} processes"
                      for (cpu, gpu), n in kinds.items())
    return Section(
        "mixed-machines", "Warning: the bench processes ran on different machines",
        [f"A speed or memory ratio between two variants here compares machines as well as frameworks. {named}. "
         "Rerun the bench on one kind of machine (on SLURM, give the bench rule a `--constraint` in "
         "profiles/slurm)."],
        css_class="warning",
    )


def contention_note(bench: pd.DataFrame | None) -> str:
    """What the bench processes saw of other load: how many were busy, and how much of it was the hypervisor's."""
    if bench is None or "steal_cpu_share" not in bench.columns:  # tables from before steal was recorded
        return ""
    processes = process_rows(bench)
    busy = processes[processes["background_cpu_share"] > BUSY_SHARE]
    return (f"Other load took over {100 * BUSY_SHARE:g} % of the machine in {len(busy)} of "
            f"{len(processes)} bench processes (at most {fmt(100 * processes['background_cpu_share'].max(), 1)} %) "
            f"while they measured; the hypervisor's steal time, which no process here owns and an idle machine "
            f"does not remove, at most {fmt(100 * processes['steal_cpu_share'].max(), 1)} %. ")


def dominant_verdict(counts: dict[str, int]) -> str:
    """The verdict held in the most conditions; ties read as inconclusive."""
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "inconclusive"
    return ranked[0][0]


def untrained_note(bench_only: list[str]) -> list[str]:
    """The paragraph that says which arms this experiment benches without training them (none: no paragraph)."""
    if not bench_only:
        return []
    names = ", ".join(frameworks.display_name(name) for name in bench_only)
    return [f"Benched here but not trained: {names} (bench.frameworks); this table has no rows for them. "
            "Listed in experiment.frameworks they are trained as well: the experiment `arms` is default's grid "
            "with all four arms trained (make report EXPERIMENT=arms)."]


def accuracy_section(training: pd.DataFrame, curves: pd.DataFrame, models: list[str], figure_dir: Path,
                     bench_only: list[str]) -> Section:
    rows = []
    for model, framework, group in model_framework_groups(training, models):
        ci = mean_ci(group["test_accuracy"])
        epoch = mean_ci(group["epoch_time_s"])
        rows.append([
            model, frameworks.display_name(framework), str(ci.n),
            f"{fmt(ci.mean * 100, 2)} ± {fmt(ci.half_width * 100, 2)}",
            fmt(group["test_accuracy"].std() * 100, 2),
            f"{fmt(epoch.mean, 2)} ± {fmt(epoch.half_width, 2)}",
            f"{int(group['parameter_count'].iloc[0]):,}",
        ])
    return Section(
        "accuracy", "Accuracy",
        ["Test accuracy over seeds (mean ± 95 % t half-width; n/a with one seed) and the mean training time "
         "per epoch. Training jobs may run two at a time (one thread each), so epoch times are indicative; "
         "the speed claims use the bench runs below, which run alone.", *untrained_note(bench_only)],
        [Table(["model", "framework", "seeds", "test accuracy %, mean ± 95 % CI", "sd, points",
                "epoch time s, mean ± 95 % CI", "parameters"], rows)],
        [(figures.accuracy_figure(training, models, figure_dir / FIGURES["accuracy"]), "test accuracy by model"),
         (figures.learning_curves_figure(curves, models, figure_dir / FIGURES["curves"]), "learning curves")],
    )


def time_to_accuracy_section(training: pd.DataFrame, models: list[str]) -> Section:
    targets = [c for c in training.columns if c.startswith("time_to_")]
    rows = [[model, frameworks.display_name(framework), *[time_to_target_cell(group, column) for column in targets]]
            for model, framework, group in model_framework_groups(training, models)]
    return Section(
        "time-to-accuracy", "Time to accuracy",
        ["Training wall time until validation accuracy (val acc), or the hit ratio @ k of a ranking split "
         "scored after every epoch (test HR, MovieLens' held-out items, as MLPerf's NCF scores it; training "
         "reads nothing of it), first reached each target (MLPerf style), mean over the seeds that reached it; "
         "'no target': the model's dataset sets none."],
        [Table(["model", "framework", *[target_label(column) for column in targets]], rows)],
    )


def target_label(column: str) -> str:
    """`time_to_0.85_s` -> val acc ≥ 0.85; `time_to_hr@10_0.65_s` -> test HR@10 ≥ 0.65 (tables.target_times)."""
    name = column[len("time_to_"):-len("_s")]
    if name.startswith("hr@"):
        k, target = name.split("_")
        return f"test HR@{k[len('hr@'):]} ≥ {target}"
    return f"val acc ≥ {name}"


def time_to_target_cell(group: pd.DataFrame, column: str) -> str:
    applies = group[TARGETS_SET].map(lambda columns: column in columns.split(";"))
    if not applies.any():
        return "no target"
    runs = group[applies]
    reached = runs[column].dropna()
    if reached.empty:
        return f"not reached (0/{len(runs)})"
    return f"{fmt(reached.mean(), 1)} s ({len(reached)}/{len(runs)} seeds)"


def cv_percent(values) -> str:
    return fmt(100 * coefficient_of_variation(values), 1)


def within_cv_cell(group: pd.DataFrame, metric: str) -> str:
    """The mean CV of the windows inside one process."""
    cv = within_process_cv(group, metric)
    return fmt(100 * cv, 1) if math.isfinite(cv) else "n/a"


def workload_of(config_dir: Path, model: str) -> str:
    return WORKLOADS[model_input_kind(config_dir, model)]


def by_workload(config_dir: Path, models: list[str]) -> list[str]:
    """The models grouped by workload (vision, text, recommendation), each group in the experiment's order."""
    order = list(WORKLOADS.values())
    return sorted(models, key=lambda model: (order.index(workload_of(config_dir, model)), models.index(model)))


def model_size(model: str, training: pd.DataFrame, bench: pd.DataFrame | None, column: str) -> str:
    """A model's parameter count or FLOPs per sample as its rows recorded them (bench rows have both)."""
    for table in (bench, training):
        if table is not None and column in table.columns:
            values = table.loc[table["model"] == model, column].dropna()
            if len(values):
                return f"{int(values.iloc[0]):,}" if column == "parameter_count" else f"{float(values.iloc[0]):.3g}"
    return "n/a"


def bench_panels(cfg: DictConfig, config_dir: Path, models: list[str]) -> dict[str, str]:
    """Each benched model's figure panel title: its name, workload and, where so, synthetic data."""
    return {model: f"{model}\n({workload_of(config_dir, model)}{', synthetic data' if is_synthetic(cfg, model) else ''})"
            for model in models}


def workloads_section(cfg: DictConfig, config_dir: Path, models: list[str], trained: list[str],
                      training: pd.DataFrame, bench: pd.DataFrame | None) -> Section:
    """Which model is which workload, on which data, trained or only benched, and its size."""
    rows = []
    for model in models:
        data = dataset_of(cfg, model) + (" (synthetic)" if is_synthetic(cfg, model) else "")
        rows.append([workload_of(config_dir, model), model, data, "yes" if model in trained else "no",
                     model_size(model, training, bench, "parameter_count"),
                     model_size(model, training, bench, "flops_per_sample")])
    return Section(
        "workloads", "Workloads",
        ["The models of this run by workload, the data each reads, and their size (trainable parameters, "
         "analytic forward FLOPs per sample). Synthetic data is seeded arrays of the real dataset's shapes and "
         "dtypes: it carries no signal, so a model on it is benched (speed and memory) but never trained, and "
         "every bench row of it is marked '(synthetic data)'."],
        [Table(["workload", "model", "data", "trained", "parameters", "FLOPs per sample"], rows)],
    )


def bench_model_label(rows: pd.DataFrame) -> str:
    """One process's or variant's model name, marked '(synthetic data)' where its rows were measured on it."""
    model = rows["model"].iloc[0]
    synthetic = "synthetic" in rows.columns and bool(rows["synthetic"].any())
    return f"{model} (synthetic data)" if synthetic else model


def synthetic_note(cfg: DictConfig, models: list[str]) -> list[str]:
    """The sentence that marks the claims' conditions on synthetic data, or none when every model read real data."""
    synthetic = [model for model in models if is_synthetic(cfg, model)]
    if not synthetic:
        return []
    return [f"Conditions on {', '.join(synthetic)} were measured on synthetic data (seeded arrays of the real "
            "dataset's shapes, see Workloads): speed and memory only, no accuracy."]


def variant_groups(bench: pd.DataFrame, models: list[str]):
    """((model, framework, mode), rows) per variant in report order: the experiment's models, then the registry's
    frameworks, then each framework's modes (the table itself is in the schedule's shuffled order)."""
    arms = list(frameworks.FRAMEWORKS)

    def report_order(item):
        model, framework, mode = item[0]
        return models.index(model), arms.index(framework), frameworks.FRAMEWORKS[framework].modes.index(mode)

    return sorted(bench.groupby(["model", "framework", "mode"], sort=False), key=report_order)


def bench_metric_rows(bench: pd.DataFrame, metrics: list[tuple[str, int]], within: bool,
                      models: list[str]) -> list[list[str]]:
    """One row per variant: processes, then per metric its mean [95 % CI over processes] and between-process
    CV, and (for metrics measured per window) the within-process CV."""
    rows = []
    for (model, framework, mode), group in variant_groups(bench, models):
        cells = [bench_model_label(group), frameworks.display_name(framework), mode, str(group["replicate"].nunique())]
        for metric, digits in metrics:
            cells += [over_processes_cell(group, metric, digits), cv_percent(process_means(group, metric))]
            if within:
                cells.append(within_cv_cell(group, metric))
        rows.append(cells)
    return rows


BENCH_TEXT = ("Every number is the mean over the variant's processes (each process the mean of its windows) "
              "with a 95 % t interval over processes; 'between CV' is the CV of the process means (how far a "
              "new process moves), 'within CV' the mean CV of the windows inside one process.")


def bench_sections(bench: pd.DataFrame | None, figure_dir: Path, panels: dict[str, str]) -> list[Section]:
    """The speed and memory tables and figures; `panels`: model -> its figure panel's title, in report order."""
    models = list(panels)
    specs = [
        ("throughput", "Training throughput by mode", [("train_samples_per_s", 0)], True,
         ["samples/s, mean [95 % CI]"], "train_samples_per_s", "training throughput (samples/s)", False,
         "Training throughput over a fixed number of windows of a fixed number of steps after untimed "
         "warm-up steps, in every process of a variant; the processes of all variants ran one at a time, "
         "in the interleaved order of the schedule below. Every window is listed in 'Every window'."),
        ("first-step", "Compile and first-step overhead", [("first_step_s", 3)], False,
         ["time to first step s, mean [95 % CI]"], "first_step_s", "time to first step (s)", True,
         "Time from a fresh model to the end of its first training step: tracing, graph building and "
         "compilation (XLA, torch.compile) land here, reported apart from throughput; once per process."),
        ("latency", "Inference latency", [("infer_latency_p50_ms", 3), ("infer_latency_p99_ms", 3),
                                          ("infer_samples_per_s", 0)], True,
         ["p50 ms", "p99 ms", "large-batch samples/s"], "infer_latency_p50_ms", "batch-1 latency p50 (ms)", True,
         "Inference at batch 1 (percentiles over many calls, after each training window) and throughput at a "
         "large batch."),
        ("memory", "Peak memory", [("peak_memory_mb", 1), ("peak_rss_train_mb", 0), ("rss_file_after_train_mb", 0)],
         False, ["claimed memory MB (anonymous peak above baseline on the CPU)", "total peak RSS MB (reference)",
                 "of it mapped files MB"], "peak_memory_mb", "peak memory (MB)", False,
         "Claim 3 is judged on memory that the code owns: on the CPU the peak of anonymous memory (RssAnon) "
         "above the process's baseline right after the framework import and the data load, sampled in an "
         "untimed phase after the timed windows; on a GPU the framework's peak device allocation. The total "
         "peak RSS and its file-backed part are shown for reference only: the mapped library files' residency "
         "follows the page cache (a freshly installed environment maps more of them), not the code."),
    ]
    sections = []
    for anchor, title, metrics, within, headers, figure_metric, ylabel, log_scale, text in specs:
        figure_path = figure_dir / FIGURES[anchor.replace("-", "_")]
        figure = figures.bench_figure(bench, figure_metric, ylabel, title, figure_path, log_scale, panels)
        if bench is None:
            sections.append(Section(anchor, title, ["Not measured in this run: no bench results."], [], [(figure, title)]))
            continue
        header = ["model", "framework", "mode", "processes"]
        for (metric, _), name in zip(metrics, headers):
            header += [name, "between CV %"] + (["within CV %"] if within else [])
        rows = bench_metric_rows(bench, metrics, within, models)
        sections.append(Section(anchor, title, [text, BENCH_TEXT], [Table(header, rows)], [(figure, title)]))
    return sections


def windows_section(bench: pd.DataFrame | None) -> Section:
    """Every timed window of every process, in the order the processes ran: nothing is selected."""
    if bench is None:
        return Section("windows", "Every window", ["Not measured in this run: no bench results."])
    processes = bench.sort_values(["schedule_position", "window"]).groupby("schedule_position", sort=True)
    rows = []
    for position, group in processes:
        first = group.iloc[0]
        rates = ", ".join(f"{value:,.0f}" for value in group["train_samples_per_s"])
        rows.append([str(position), str(first["schedule_block"]), bench_model_label(group), frameworks.display_name(first["framework"]),
                     first["mode"], str(first["batch_size"]), str(first["threads"]), str(first["replicate"]), rates,
                     fmt(first["peak_memory_mb"], 1), fmt(100 * first["background_cpu_share"], 1),
                     fmt(100 * first["steal_cpu_share"], 1)])
    return Section(
        "windows", "Every window, in the order the processes ran",
        ["The schedule (randomised blocks: each block runs every variant once, shuffled) and every timed "
         "window's training throughput, as measured; the intervals above average each process's windows "
         "first. 'others %' is the share of the machine other processes took while the process measured, "
         "'steal %' the share the hypervisor took for other virtual machines (steal time: no process here "
         "owns it; it is in the busy time 'others %' is computed from, though a guest may also charge some of "
         "it to the process that was running, so it can exceed 'others %')."],
        [Table(["place", "block", "model", "framework", "mode", "batch", "threads", "replicate",
                "samples/s of each window",
                "claimed memory MB", "others %", "steal %"], rows)],
    )


def export_section(exports: pd.DataFrame | None, models: list[str], bench_only: list[str]) -> Section:
    if exports is None or exports.empty:
        return Section("export", "Export and reload", ["Not measured in this run.", *untrained_note(bench_only)])
    rows = []
    for model, framework, group in model_framework_groups(exports, models):
        rows.append([
            model, frameworks.display_name(framework), group["export_format"].iloc[0],
            fmt(group["export_size_mb"].mean(), 3), fmt(group["load_time_s"].mean(), 3),
            fmt(group["first_prediction_ms"].mean(), 2), fmt(group["prediction_parity"].mean() * 100, 2),
            str(len(group)),
        ])
    return Section(
        "export", "Export and reload",
        ["Each trained model exported to its framework's deployable format, reloaded, and compared with the "
         "in-memory model (means over seeds; load and first prediction timed in the evaluating process).",
         *untrained_note(bench_only)],
        [Table(["model", "framework", "format", "size MB", "load s", "first prediction ms",
                "same predicted class %", "seeds"], rows)],
    )


def claim_details_section(results: list, confidence: float, synthetic: list[str]) -> Section:
    frame = claim_catalogue.conditions_frame(results)
    rows = [
        [r.claim, r.label, r.metric, f"{fmt(r.estimate, 3)} [{fmt(r.ci_low, 3)}, {fmt(r.ci_high, 3)}]",
         f"{r.n_a} / {r.n_b}", r.verdict]
        for r in frame.itertuples()
    ]
    notes = [f"Claim {r.claim_id}: {note}" for r in results for note in r.notes]
    return Section(
        "claims", "Claims in detail",
        [f"Per condition: the estimate (ratio a/b of geometric means over processes, or difference a−b for "
         f"accuracy) with its {100 * confidence:g} % Welch t interval over independent processes (bench "
         "processes, or seeds), each side's variance moderated by a prior fitted to all groups of the metric "
         "in this run (empirical Bayes; the method column of claims.csv gives the prior's degrees of freedom), "
         "the number of processes on each side, and the verdict.", *synthetic, *notes],
        [Table(["claim", "condition", "metric", "estimate [95 % CI]", "processes a / b", "verdict"], rows,
               verdict_columns=(5,))],
    )


def article_section(config_dir: Path) -> Section:
    from fwbench.config import compose_config

    rows = []
    for model in ("linear", "mlp", "lenet"):
        trainer = compose_config(config_dir, ["experiment=article", f"model={model}"]).trainer
        rows.append([model, trainer.optimizer, str(trainer.lr), str(trainer.momentum),
                     str(trainer.batch_size), str(trainer.epochs)])
    lenet = compose_config(config_dir, ["model=lenet"]).model
    corrected = flatten_size(lenet, ARTICLE_INPUT_SHAPE, ARTICLE_CLASSES)
    facts = [
        f"Chapter 6 (LeNet): the article flattens to 16*6*6 = {ARTICLE_LENET_FLATTEN}, but two 3x3 valid "
        f"convolutions and two 2x2 poolings of a 28x28 input leave 16 maps of 5x5 = {corrected} features "
        f"(computed by fwbench.models.architecture.flatten_size); the pipeline's lenet uses {corrected}.",
        "Chapter 3: the convolutional network's flatten size assumes a pooling layer that the code does not "
        "contain, so its dense layer cannot take the flattened output as written.",
        "The article's TensorFlow code uses the TF1 placeholder/Session API (tf.placeholder, tf.Session), "
        "which TensorFlow 2 removed from the main namespace; the pipeline runs TensorFlow 2 two ways: "
        "Keras 3 on TensorFlow (tf) and TensorFlow alone, a tf.function and GradientTape step (tf_native).",
        "Run the recipes with `snakemake --config experiment=article` (MNIST) or add "
        "`overrides=\"dataset=fashion_mnist\"`.",
    ]
    return Section(
        "article", "The article's own recipes", facts,
        [Table(["model", "optimizer", "learning rate", "momentum", "batch size", "epochs"], rows)],
    )


def machines_summary(runs: list[dict], bench: pd.DataFrame | None) -> str:
    """Every CPU the jobs ran on, as each training run and bench process recorded it, with how many ran
    there: a cluster run's jobs can land on nodes of different CPUs, and speeds compare within one only."""
    jobs: defaultdict[str, Counter] = defaultdict(Counter)  # machine -> kind of job -> jobs
    recorded = [(run["history"]["machine"], "training runs") for run in runs]
    if bench is not None:
        recorded += [(process, "bench processes") for process in process_rows(bench).to_dict("records")]
    for machine, kind in recorded:
        jobs[f"{machine['cpu_model']}, {int(machine['cpu_count'])} cores"][kind] += 1
    return "; ".join(f"{machine} ({', '.join(f'{kind} {n}' for kind, n in counts.items())})"
                     for machine, counts in jobs.items())


def provenance_section(cfg: DictConfig, runs: list[dict], training: pd.DataFrame, bench: pd.DataFrame | None,
                       tracking: dict) -> Section:
    first = runs[0]["history"]
    machine = first["machine"]
    packages = {}
    for run in runs:
        packages.update(run["history"].get("packages", {}))
    facts = [
        ["git commit", git_state()["git_commit"]],
        ["command", " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])],
        ["experiment / dataset", f"{cfg.experiment.name} / {cfg.experiment.dataset}"],
        ["machine", machines_summary(runs, bench)],
        ["system", machine["platform"]],
        ["device(s)", ", ".join(sorted(set(training["device"])))],
        ["python", machine["python"]],
        ["packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))],
        ["initialisation", "each framework's default (not matched)"],
        ["MLflow tracking", tracking.get("summary", "not recorded")],
    ]
    run_rows = [[frameworks.display_name(r.framework), r.model, f"seed {r.seed}", "train", r.train_run_id or "n/a"]
                for r in training.itertuples()]
    run_rows += [[frameworks.display_name(r.framework), r.model, f"seed {r.seed}", "evaluate", r.evaluate_run_id or "n/a"]
                 for r in training.itertuples()]
    if bench is not None and "mlflow_run_id" in bench.columns:
        for (framework, model, mode, batch, threads, replicate), group in bench.groupby(list(PROCESS_COLUMNS),
                                                                                       sort=False):
            run_rows.append([frameworks.display_name(framework), model,
                             f"{mode}, batch {batch}, {threads} threads, replicate {replicate}", "bench",
                             str(group["mlflow_run_id"].iloc[0])])
    return Section(
        "provenance", "Provenance",
        ["Every number above is computed from results.csv beside this report (one row per measured value, "
         "with the MLflow run that produced it)."],
        [Table(["", ""], facts), Table(["framework", "model", "seed / mode", "job", "MLflow run"], run_rows)],
        preformatted=OmegaConf.to_yaml(cfg, resolve=True),
    )


def tracking_summary(cfg: DictConfig) -> dict:
    """What the tracking parent file says about the MLflow store, when tracking ran."""
    from fwbench.tracking.runs import parent_run_file, read_parent

    path = parent_run_file(cfg)
    if not Path(path).exists():
        return {}
    parent = read_parent(path)
    return {"summary": f"store {parent.get('tracking_uri')}, experiment {parent.get('experiment_name')} "
                       f"(id {parent.get('experiment_id')}), parent run {parent.get('parent_run_id')}"}


# --- the step -----------------------------------------------------------------

def build_report(cfg: DictConfig, config_dir: Path, bench_path: Path | None = None) -> dict[str, Path]:
    out_dir = report_dir(cfg)
    figure_dir = out_dir / "figures"
    runs = load_runs(cfg)
    training = training_table(runs)
    curves = curves_table(runs)
    exports = export_table(training)
    bench_all = bench_table(bench_path) if bench_path else None
    # The main tables and claims are at one setting; a sweep's other settings have sections of their own.
    reference = reference_setting(cfg)
    bench = sweep.at_setting(bench_all, *reference)
    if bench is not None and bench.empty:
        raise DataError(f"the bench table has no rows at the reference setting (batch {reference[0]}, "
                        f"{reference[1]} threads): rerun the bench with this config")
    models = by_workload(config_dir, trained_models(cfg))
    benched = by_workload(config_dir, bench_models(cfg))
    bench_only = bench_only_frameworks(cfg)
    accuracy = training[list(claim_catalogue.ACCURACY_COLUMNS)]
    margins = claim_catalogue.Margins(cfg.claims.speed_margin, cfg.claims.memory_margin, cfg.claims.accuracy_margin)
    confidence = cfg.claims.confidence
    claim_results = claim_catalogue.evaluate_claims(bench, accuracy, exports, confidence=confidence, margins=margins)
    # The controls run at the reference setting, the one `bench` holds: (framework, model, mode) names them there.
    controls = claim_catalogue.evaluate_controls(bench, [variant[:3] for variant in control_variants(cfg)],
                                                 confidence=confidence, margins=margins)
    setting_claims = sweep.claims_by_setting(bench_all, confidence, margins) if sweep.is_sweep(bench_all) else []
    synthetic = synthetic_note(cfg, benched)
    warnings = [w for w in (mixed_machines_warning(bench_all), unsteady_warning(controls, bench)) if w]
    for warning in warnings:
        log.warning("%s", warning.paragraphs[0])
    sections = [
        *warnings,
        summary_section(claim_results, margins, confidence, synthetic),
        controls_section(controls, margins),
        workloads_section(cfg, config_dir, list(dict.fromkeys([*models, *benched])), models, training, bench),
        accuracy_section(training, curves, models, figure_dir, bench_only),
        time_to_accuracy_section(training, models),
        *bench_sections(bench, figure_dir, bench_panels(cfg, config_dir, benched)),
        *sweep_report.sweep_sections(bench_all, reference, setting_claims, confidence, figure_dir),
        windows_section(bench_all),
        export_section(exports, models, bench_only),
        claim_details_section(claim_results, confidence, synthetic),
        article_section(config_dir),
        provenance_section(cfg, runs, training, bench_all, tracking_summary(cfg)),
    ]
    arms = ", ".join(frameworks.display_name(name) for name in all_frameworks(cfg))
    others = sorted({dataset_of(cfg, model) for model in benched} - {cfg.experiment.dataset})
    datasets = cfg.experiment.dataset + (f" (and {', '.join(others)}: see Workloads)" if others else "")
    title = f"fwbench: {arms} — {cfg.experiment.name} experiment on {datasets}"
    outputs = {"html": out_dir / "comparison.html", "markdown": out_dir / "comparison.md",
               "results": out_dir / "results.csv", "claims": out_dir / CLAIMS_TABLE}
    write_text_atomic(outputs["results"], results_long(training, bench_all).to_csv(index=False))
    write_text_atomic(outputs["claims"], claims_table(claim_results, controls, setting_claims).to_csv(index=False))
    write_text_atomic(outputs["markdown"], render_markdown(title, sections, out_dir))
    write_text_atomic(outputs["html"], render_html(title, sections))
    log.info("report written to %s", outputs["html"])
    return outputs


def claims_table(results: list, controls: claim_catalogue.ControlResults,
                 setting_claims: list[sweep.ConditionSweep] = ()) -> pd.DataFrame:
    """Every condition of every claim and every control, and for a sweep every claim's conditions at every
    setting ('1 at batch 32, 2 threads'), one row each: what scripts/compare_reports.py reads."""
    frame = claim_catalogue.conditions_frame(results)
    control_rows = claim_catalogue.conditions_frame(
        [claim_catalogue.ClaimResult("control", "A/A control", claim_catalogue.MEASURED, "", controls.rows)]
    )
    return pd.concat([frame, control_rows, sweep.conditions_by_setting(list(setting_claims))], ignore_index=True)
