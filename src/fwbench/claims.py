"""The article's claims, the tables they are tested on, and their evaluation.

Each measurable claim is tested per condition (device x model x pairing of
execution modes, or export format, or nothing more than the model for
accuracy) with fwbench.stats: an effect size, its interval over independent
processes (bench replicates, training seeds) and a verdict against a
practical margin (speed, memory, accuracy: `Margins`). A claim then gets one overall line: how many conditions each verdict
held in and where it flips. A claim whose data is absent (no GPU rows, no
export table) is "not measured here", with the reason, never guessed. Claims
about things a benchmark cannot observe are listed in UNMEASURED_CLAIMS.

Table schemas (the bench, evaluate and export steps write these; extra columns
are ignored):
- bench: one row per device x framework x model x mode x replicate x window,
  BENCH_COLUMNS, the bench's own names (fwbench.bench.outputs) but for
  peak_memory_mb, the memory claim 3 judges (reporting.tables.with_claim_columns);
  a replicate is one process, and its windows are averaged into one value
  before any interval is built.
- accuracy: one row per framework x model x seed, ACCURACY_COLUMNS;
  test_accuracy is a fraction in [0, 1]. An optional `device` column splits
  the conditions by device.
- export: one row per framework x model x seed x export format,
  EXPORT_COLUMNS; prediction_parity is the fraction of test samples whose
  predicted class is the same from the exported and the in-memory model.
  An optional `device` column splits the conditions by device.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.api.types import is_numeric_dtype

from fwbench import stats
from fwbench.bench.table import process_means
from fwbench.errors import DataError
from fwbench.stats import A_BETTER, DIFFERENCE, EQUIVALENT, RATIO, SUPPORTED, CONTRADICTED, VERDICTS

BENCH_COLUMNS = (
    "device", "framework", "model", "mode", "replicate", "window",
    "train_samples_per_s", "first_step_s", "infer_latency_p50_ms", "infer_samples_per_s",
    "peak_memory_mb", "parameter_count", "flops_per_sample",
)
BENCH_NUMERIC = BENCH_COLUMNS[6:]
# The bench table's independent unit: one process of a variant.
PROCESS_COLUMN = "replicate"
# Even (0) or odd (1) process: the two arms of an A/A control.
REPLICATE_PARITY = "replicate_parity"
ACCURACY_COLUMNS = ("framework", "model", "seed", "test_accuracy")
EXPORT_COLUMNS = (
    "framework", "model", "seed", "export_format",
    "export_size_mb", "load_time_s", "first_prediction_ms", "prediction_parity",
)
EXPORT_NUMERIC = EXPORT_COLUMNS[4:]

MEASURED = "measured"
NOT_MEASURED = "not measured here"
# Accuracy is a fraction: 0.015 is 1.5 percentage points, about what two seeds
# of the same framework differ by on MNIST-like data; a framework difference
# smaller than that is no difference in what the model learns.
EQUIVALENCE_MARGIN = 0.015
# A speed or memory ratio within [1/1.05, 1.05] is no difference that matters (config claims.*_margin).
SPEED_MARGIN = 0.05
MEMORY_MARGIN = 0.05
SPEED, MEMORY, ACCURACY = "speed", "memory", "accuracy"
# A/A controls: a variant against itself, which must not come out supported or contradicted.
FAILED_CONTROL_VERDICTS = (SUPPORTED, CONTRADICTED)
ACCURACY_RANGE = (0.0, 1.0)
# torch reports "cuda" (also on ROCm), Keras' adapter "cuda" as well; "gpu" for
# tables written by other tools.
GPU_DEVICE_PREFIXES = ("cuda", "gpu")
CPU_DEVICE = "cpu"
# Shown when a table has no device column: the conditions are per model only.
ANY_DEVICE = "any"
# Model size for "especially for large models": FLOPs per sample, else parameters.
SIZE_COLUMNS = ("flops_per_sample", "parameter_count")


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a framework, in an execution mode where the table has modes."""

    framework: str
    mode: str | None = None

    @property
    def label(self) -> str:
        return self.framework if self.mode is None else f"{self.framework}:{self.mode}"


@dataclass(frozen=True)
class Pairing:
    a: Arm
    b: Arm

    @property
    def label(self) -> str:
        return f"{self.a.label} vs {self.b.label}"


@dataclass(frozen=True)
class Metric:
    column: str
    higher_is_better: bool
    kind: str = RATIO
    margin: str = SPEED  # which practical margin judges it: SPEED, MEMORY or ACCURACY


@dataclass(frozen=True)
class Margins:
    """The practical margins: a ratio within [1/(1+m), 1+m], or a difference within [-m, m], does not matter."""

    speed: float = SPEED_MARGIN
    memory: float = MEMORY_MARGIN
    accuracy: float = EQUIVALENCE_MARGIN

    def of(self, metric: Metric) -> float:
        return {SPEED: self.speed, MEMORY: self.memory, ACCURACY: self.accuracy}[metric.margin]


@dataclass(frozen=True)
class Claim:
    """A claim of the article: side a of each pairing is claimed better (or a and b equivalent)."""

    id: str
    text: str
    metrics: tuple[Metric, ...]
    pairings: tuple[Pairing, ...]
    conditions: str
    direction: str = A_BETTER
    # False for a line the pipeline measures beyond the article's claims (Keras' cost).
    from_article: bool = True


@dataclass(frozen=True)
class UnmeasuredClaim:
    id: str
    text: str
    reason: str


@dataclass(frozen=True)
class ConditionResult:
    """One condition of one claim: the effect of a versus b, its interval and verdict."""

    label: str
    scope: str
    device: str
    model: str
    modes: str
    metric: str
    kind: str
    estimate: float
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    verdict: str
    method: str


@dataclass(frozen=True)
class ClaimResult:
    claim_id: str
    text: str
    status: str
    overall: str
    rows: tuple[ConditionResult, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def counts(self) -> dict[str, int]:
        tally = Counter(row.verdict for row in self.rows)
        return {verdict: tally.get(verdict, 0) for verdict in VERDICTS}


THROUGHPUT = Metric("train_samples_per_s", higher_is_better=True)
PEAK_MEMORY = Metric("peak_memory_mb", higher_is_better=False, margin=MEMORY)
TEST_ACCURACY = Metric("test_accuracy", higher_is_better=True, kind=DIFFERENCE, margin=ACCURACY)
EXPORT_METRICS = (
    Metric("export_size_mb", higher_is_better=False, margin=MEMORY),
    Metric("load_time_s", higher_is_better=False),
    Metric("first_prediction_ms", higher_is_better=False),
    Metric("prediction_parity", higher_is_better=True, kind=DIFFERENCE, margin=ACCURACY),
)

TF_GRAPH_VS_TORCH_EAGER = Pairing(Arm("tf", "graph"), Arm("torch", "eager"))
TF_XLA_VS_TORCH_COMPILE = Pairing(Arm("tf", "xla"), Arm("torch", "compile"))
TF_EAGER_VS_TORCH_EAGER = Pairing(Arm("tf", "eager"), Arm("torch", "eager"))


def tf_arm_vs_torch_modes(tf_arm: str) -> tuple[Pairing, ...]:
    """A TensorFlow arm's graph, xla and eager modes against torch's eager, compile and eager."""
    return (Pairing(Arm(tf_arm, "graph"), Arm("torch", "eager")), Pairing(Arm(tf_arm, "xla"), Arm("torch", "compile")),
            Pairing(Arm(tf_arm, "eager"), Arm("torch", "eager")))


# The article's "TensorFlow" is tested as both TensorFlow arms: Keras on TF (tf) and TF alone (tf_native).
TF_VS_TORCH_MODES = tf_arm_vs_torch_modes("tf") + tf_arm_vs_torch_modes("tf_native")
TORCH_VS_TF_MODES = tuple(Pairing(p.b, p.a) for p in TF_VS_TORCH_MODES)
TF_VS_TORCH = (Pairing(Arm("tf"), Arm("torch")), Pairing(Arm("tf_native"), Arm("torch")))
# Every other arm against torch: what a model learns must not depend on the framework.
ARMS_VS_TORCH = (*TF_VS_TORCH, Pairing(Arm("jax"), Arm("torch")), Pairing(Arm("keras_torch"), Arm("torch")),
                 Pairing(Arm("keras_jax"), Arm("torch")))
# Keras' cost: the backend's own training step (a) against Keras' fit on that backend (b), mode by mode.
NATIVE_VS_KERAS_MODES = (
    Pairing(Arm("tf_native", "graph"), Arm("tf", "graph")),
    Pairing(Arm("tf_native", "xla"), Arm("tf", "xla")),
    Pairing(Arm("tf_native", "eager"), Arm("tf", "eager")),
    Pairing(Arm("torch", "eager"), Arm("keras_torch", "eager")),
    Pairing(Arm("torch", "compile"), Arm("keras_torch", "compile")),
    Pairing(Arm("jax", "jit"), Arm("keras_jax", "jit")),
)

CLAIMS = (
    Claim(
        "1", "TensorFlow computes faster than PyTorch thanks to its static graph.",
        (THROUGHPUT,), TF_VS_TORCH_MODES,
        "device x model x mode pairing, for both TensorFlow arms (tf: Keras on TensorFlow; tf_native: "
        "tf.function and GradientTape, no Keras); <arm>:eager vs torch:eager is the control the "
        "static-graph explanation predicts no advantage for",
    ),
    Claim(
        "1b", "... especially for large models (TensorFlow's speed advantage grows with model size).",
        (THROUGHPUT,), TF_VS_TORCH_MODES,
        "device x mode pairing; the least-squares slope of log(tf/torch throughput ratio) on "
        "log(FLOPs per sample) over every model, read as the fitted change of the ratio from the "
        "smallest to the largest model",
    ),
    Claim(
        "2", "PyTorch's dynamic graph can be slower, and its JIT compilation (today torch.compile) recovers speed.",
        (THROUGHPUT,),
        (Pairing(Arm("torch", "compile"), Arm("torch", "eager")), TF_GRAPH_VS_TORCH_EAGER),
        "device x model; torch:compile vs torch:eager (recovers speed) and tf:graph vs torch:eager "
        "(dynamic graph slower)",
    ),
    Claim(
        "3", "TensorFlow uses less memory than PyTorch.",
        (PEAK_MEMORY,), TF_VS_TORCH_MODES,
        "device x model x mode pairing; peak anonymous memory of training above the process's baseline "
        "after the framework import and data load (CPU), peak device allocation (GPU)",
    ),
    Claim(
        "4", "Both frameworks have mature GPU support; PyTorch does especially well on GPUs with many CUDA cores.",
        (THROUGHPUT,), TORCH_VS_TF_MODES,
        "GPU device x model x mode pairing: torch vs tf on the GPU, and, where CPU rows exist, "
        "torch's advantage on the GPU over its advantage on the CPU",
    ),
    Claim(
        "5", "TensorFlow is stronger for deployment.",
        EXPORT_METRICS, TF_VS_TORCH,
        "model x metric x export format pair: exported size, load time, first-prediction latency "
        "(lower is better) and prediction parity with the in-memory model (higher is better)",
    ),
    Claim(
        "6", "The frameworks do not differ in what a model learns.",
        (TEST_ACCURACY,), ARMS_VS_TORCH,
        "model x arm against torch; test accuracy over seeds, equivalence within a margin",
        direction=EQUIVALENT,
    ),
    Claim(
        "keras", "Keras costs speed: a backend's own training step is faster than Keras' fit on that backend.",
        (THROUGHPUT,), NATIVE_VS_KERAS_MODES,
        "device x model x mode pairing: tf_native vs tf (Keras on TensorFlow), torch vs keras_torch, "
        "jax vs keras_jax, where both arms are benched; not a claim of the article, the measured cost of Keras",
        from_article=False,
    ),
)

UNMEASURED_CLAIMS = (
    UnmeasuredClaim(
        "community", "PyTorch dominates research while TensorFlow has the larger industry community.",
        "community size and composition are not properties of a training run; they need surveys or "
        "publication and repository counts, which this pipeline does not collect",
    ),
    UnmeasuredClaim(
        "ecosystem", "TensorFlow has the richer ecosystem (TFX, TF Lite, TF.js, TensorBoard, TF Hub).",
        "the pipeline exercises training, inference and export of its own models only; the breadth of "
        "tools around a framework is not observed by running them",
    ),
    UnmeasuredClaim(
        "ease of use", "PyTorch is more Pythonic, easier to learn and to debug.",
        "ease of use is a judgement of people; it needs a user study. Lines of code of the two adapters "
        "are no proxy: both are written to one shared training loop",
    ),
)


@dataclass(frozen=True)
class _Settings:
    confidence: float
    margins: Margins
    # Per metric column: the prior of its groups' variances (fwbench.stats.fit_variance_prior).
    priors: dict = field(default_factory=dict)

    def prior(self, metric: Metric) -> stats.VariancePrior:
        return self.priors.get(metric.column, stats.NO_PRIOR)


# The groups whose variances a metric's prior is fitted to: every arm x model (x mode, x format) it has.
PRIOR_GROUPS = {
    "bench": ("framework", "model", "mode"),
    "accuracy": ("framework", "model"),
    "export": ("framework", "model", "export_format"),
}
PRIOR_METRICS = {"bench": (THROUGHPUT, PEAK_MEMORY), "accuracy": (TEST_ACCURACY,), "export": EXPORT_METRICS}


def variance_priors(tables: dict, extra_keys: tuple[str, ...] = ()) -> dict[str, stats.VariancePrior]:
    """For each metric, the prior fitted to the variances of all its groups in this run (on every device).

    `extra_keys` splits the groups further, so that the prior is fitted to groups like those compared
    (the A/A controls compare halves of a variant).
    """
    priors = {}
    for name, metrics in PRIOR_METRICS.items():
        table = tables.get(name)
        if table is None:
            continue
        keys = [*PRIOR_GROUPS[name], *(["device"] if "device" in table.columns else []), *extra_keys]
        for metric in metrics:
            groups = [_unit_values(rows, metric.column) for _, rows in table.groupby(keys, sort=False)]
            priors[metric.column] = stats.fit_variance_prior(groups, metric.kind)
    return priors


class _NotMeasured(Exception):
    """A claim's data is absent; the message says which."""


def evaluate_claims(
    bench_df: pd.DataFrame | None,
    accuracy_df: pd.DataFrame | None,
    export_df: pd.DataFrame | None = None,
    *,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    margins: Margins = Margins(),
) -> list[ClaimResult]:
    """One ClaimResult per entry of CLAIMS, in order; a missing or empty table makes its claims "not measured here"."""
    tables = {
        "bench": _checked_table(bench_df, BENCH_COLUMNS, BENCH_NUMERIC, "bench"),
        "accuracy": _checked_table(accuracy_df, ACCURACY_COLUMNS, ("test_accuracy",), "accuracy"),
        "export": _checked_table(export_df, EXPORT_COLUMNS, EXPORT_NUMERIC, "export"),
    }
    _check_accuracy_range(tables["accuracy"])
    for name in ("speed", "memory", "accuracy"):
        stats.check_margin(getattr(margins, name), f"claims.{name}_margin")
    settings = _Settings(confidence, margins, variance_priors(tables))
    return [_evaluate(claim, tables, settings) for claim in CLAIMS]


def _evaluate(claim: Claim, tables: dict, settings: _Settings) -> ClaimResult:
    evaluator = EVALUATORS[claim.id]
    try:
        rows, notes = evaluator(claim, tables, settings)
    except _NotMeasured as reason:
        return ClaimResult(claim.id, claim.text, NOT_MEASURED, f"{NOT_MEASURED}: {reason}")
    if not rows:
        reason = "no condition had data on both sides" + (f" ({'; '.join(notes)})" if notes else "")
        return ClaimResult(claim.id, claim.text, NOT_MEASURED, f"{NOT_MEASURED}: {reason}", notes=tuple(notes))
    return ClaimResult(claim.id, claim.text, MEASURED, overall_line(rows), tuple(rows), tuple(notes))


def _checked_table(df, columns: tuple[str, ...], numeric: tuple[str, ...], name: str) -> pd.DataFrame | None:
    """The table, or None when absent or empty; a table lacking columns is an error, not an absence."""
    if df is None or len(df) == 0:
        return None
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise DataError(f"{name} table lacks columns {missing}: required are {list(columns)}")
    for column in numeric:
        if not is_numeric_dtype(df[column]):
            raise DataError(
                f"{name} table column {column!r} has dtype {df[column].dtype}: accepted are numbers (NaN if missing)"
            )
    return df


def _check_accuracy_range(accuracy: pd.DataFrame | None) -> None:
    if accuracy is None:
        return
    low, high = ACCURACY_RANGE
    values = accuracy["test_accuracy"].dropna()
    outside = values[(values < low) | (values > high)]
    if len(outside):
        raise DataError(
            f"test_accuracy {float(outside.iloc[0])!r} is outside [{low}, {high}]: accuracies are fractions, not percent"
        )


def _require(table: pd.DataFrame | None, name: str) -> pd.DataFrame:
    if table is None:
        raise _NotMeasured(f"no {name} table (no {name} results were produced)")
    return table


def _unique(values) -> list:
    """Values in order of first appearance: the report lists conditions in the data's order."""
    return list(dict.fromkeys(values))


def _devices(table: pd.DataFrame) -> list[str]:
    return _unique(table["device"]) if "device" in table.columns else [ANY_DEVICE]


def _on_device(table: pd.DataFrame, device: str) -> pd.DataFrame:
    return table if device == ANY_DEVICE else table[table["device"] == device]


def is_gpu(device: str) -> bool:
    return str(device).lower().startswith(GPU_DEVICE_PREFIXES)


def _arm_values(table: pd.DataFrame, model: str, arm: Arm, column: str, extra: dict | None = None) -> np.ndarray:
    """One value per independent unit of one arm for one model (NaN dropped: a missing measurement is no sample).

    Bench rows (they have a replicate column) are averaged per process: the
    windows of one process are not independent trials. Accuracy and export
    rows are one per seed already.
    """
    mask = (table["model"] == model) & (table["framework"] == arm.framework)
    if arm.mode is not None:
        mask &= table["mode"] == arm.mode
    for key, value in (extra or {}).items():
        mask &= table[key] == value
    return _unit_values(table.loc[mask], column)


def _unit_values(rows: pd.DataFrame, column: str) -> np.ndarray:
    """One value per independent unit: a bench process's mean over its windows, or a seed's row."""
    if PROCESS_COLUMN in rows.columns:
        return process_means(rows, column).to_numpy(dtype=float)
    return rows[column].dropna().to_numpy(dtype=float)


def _row(comparison: stats.Comparison, verdict: str, scope: str, device: str, model: str,
         modes: str, metric: str) -> ConditionResult:
    return ConditionResult(
        label=f"{device} | {model} | {scope}", scope=scope, device=device, model=model, modes=modes,
        metric=metric, kind=comparison.kind, estimate=comparison.estimate, ci_low=comparison.ci_low,
        ci_high=comparison.ci_high, n_a=comparison.n_a, n_b=comparison.n_b, verdict=verdict,
        method=comparison.method,
    )


def _compare(a: np.ndarray, b: np.ndarray, metric: Metric, settings: _Settings) -> stats.Comparison:
    return stats.compare(a, b, metric.higher_is_better, kind=metric.kind, confidence=settings.confidence,
                         prior=settings.prior(metric))


def _verdict(comparison: stats.Comparison, claim: Claim, metric: Metric, settings: _Settings) -> str:
    return stats.verdict(comparison, claim.direction, settings.margins.of(metric))


def _arms_present(table: pd.DataFrame, pairing: Pairing) -> bool:
    """Whether the table has both arms' frameworks at all: a pairing of an arm this run left out is no condition."""
    return all((table["framework"] == arm.framework).any() for arm in (pairing.a, pairing.b))


def _missing_note(missing: dict[tuple[str, str], list[str]]) -> list[str]:
    return [f"no data for {arm} on {device} (models: {', '.join(models)})" for (device, arm), models in missing.items()]


def _pairing_rows(claim: Claim, bench: pd.DataFrame, devices: list[str], settings: _Settings):
    """One condition per device x pairing x model x metric where both arms have samples."""
    rows, missing = [], {}
    for device in devices:
        table = _on_device(bench, device)
        for pairing in filter(lambda p: _arms_present(table, p), claim.pairings):
            for model in _unique(table["model"]):
                for metric in claim.metrics:
                    a = _arm_values(table, model, pairing.a, metric.column)
                    b = _arm_values(table, model, pairing.b, metric.column)
                    for arm, values in ((pairing.a, a), (pairing.b, b)):
                        if values.size == 0:
                            missing.setdefault((device, arm.label), []).append(model)
                    if a.size and b.size:
                        comparison = _compare(a, b, metric, settings)
                        rows.append(_row(comparison, _verdict(comparison, claim, metric, settings), pairing.label,
                                         device, model, pairing.label, metric.column))
    return rows, _missing_note({key: _unique(models) for key, models in missing.items()})


def evaluate_pairing_claim(claim: Claim, tables: dict, settings: _Settings):
    bench = _require(tables["bench"], "bench")
    return _pairing_rows(claim, bench, _devices(bench), settings)


def _model_size(table: pd.DataFrame, model: str) -> float:
    """FLOPs per sample of a model, or its parameter count where FLOPs are not recorded."""
    for column in SIZE_COLUMNS:
        values = table.loc[table["model"] == model, column].dropna()
        if len(values):
            return float(values.median())
    return float("nan")


def size_slope_coefficients(sizes: list[float]) -> np.ndarray:
    """Weights c_m with sum_m c_m * y_m = fitted change of y from the smallest to the largest size.

    The least-squares slope of y on log(size) is sum_m (x_m - mean x) y_m /
    sum_m (x_m - mean x)^2 with x = log(size); times the span of x it is the
    change of the fitted line across the models measured.
    """
    x = np.log(np.asarray(sizes, dtype=float))
    centred = x - x.mean()
    return centred / float((centred ** 2).sum()) * float(x.max() - x.min())


def evaluate_size_trend(claim: Claim, tables: dict, settings: _Settings):
    """Per device x pairing: does a's advantage grow with model size, across every model?

    One test: the least-squares line of log(a/b) on log(FLOPs per sample) over
    all models with data on both sides; its fitted change from the smallest to
    the largest model is a contrast of the arms' log process means, with the
    same interval and margin as any speed ratio. The detail line lists the
    per-model ratios the line is fitted to, and the fitted change.
    """
    bench = _require(tables["bench"], "bench")
    metric = claim.metrics[0]
    rows, notes = [], []
    for device in _devices(bench):
        table = _on_device(bench, device)
        for pairing in filter(lambda p: _arms_present(table, p), claim.pairings):
            samples = {}
            for model in _unique(table["model"]):
                a = _arm_values(table, model, pairing.a, metric.column)
                b = _arm_values(table, model, pairing.b, metric.column)
                size = _model_size(table, model)
                if a.size and b.size and np.isfinite(size):
                    samples[model] = (size, a, b)
            if len({size for size, _, _ in samples.values()}) < 2:
                notes.append(f"{device}, {pairing.label}: fewer than two model sizes with data on both sides")
                continue
            order = sorted(samples, key=lambda name: samples[name][0])
            weights = size_slope_coefficients([samples[m][0] for m in order])
            groups, coefficients = [], []
            for model, weight in zip(order, weights):
                groups += [samples[model][1], samples[model][2]]
                coefficients += [weight, -weight]
            comparison = stats.contrast(groups, coefficients, metric.higher_is_better, kind=RATIO,
                                        confidence=settings.confidence, prior=settings.prior(metric))
            verdict = _verdict(comparison, claim, metric, settings)
            ratios = ", ".join(f"{m} {stats.compare(samples[m][1], samples[m][2], True).estimate:.3g}"
                               for m in order)
            notes.append(
                f"{device}, {pairing.label}: ratio by model size (FLOPs per sample): {ratios}; the least-squares "
                f"line of log ratio on log FLOPs changes the ratio by {comparison.estimate:.3g}x "
                f"[{comparison.ci_low:.3g}, {comparison.ci_high:.3g}] from {order[0]} to {order[-1]}: {verdict}"
            )
            rows.append(_row(comparison, verdict, pairing.label, device,
                             f"{len(order)} models, {order[0]} to {order[-1]}", pairing.label, metric.column))
    return rows, notes


def evaluate_gpu_claim(claim: Claim, tables: dict, settings: _Settings):
    """torch vs tf on each GPU, then torch's GPU advantage over its CPU advantage where CPU rows exist."""
    bench = _require(tables["bench"], "bench")
    devices = _devices(bench)
    gpus = [device for device in devices if is_gpu(device)]
    if not gpus:
        raise _NotMeasured(f"no GPU rows in the bench table (devices measured: {', '.join(map(str, devices))})")
    rows, notes = _pairing_rows(claim, bench, gpus, settings)
    if CPU_DEVICE in devices:
        rows += _gpu_over_cpu_rows(claim, bench, gpus, settings)
    notes.append(
        f"'many CUDA cores' needs GPUs of different core counts; measured on {len(gpus)} GPU device "
        f"type(s): {', '.join(map(str, gpus))}"
    )
    return rows, notes


def _gpu_over_cpu_rows(claim: Claim, bench: pd.DataFrame, gpus: list[str], settings: _Settings):
    metric = claim.metrics[0]
    cpu = _on_device(bench, CPU_DEVICE)
    rows = []
    for gpu in gpus:
        gpu_table = _on_device(bench, gpu)
        for pairing in claim.pairings:
            scope = f"{pairing.label}, {gpu} over {CPU_DEVICE}"
            for model in _unique(gpu_table["model"]):
                groups = [_arm_values(table, model, arm, metric.column)
                          for table in (gpu_table, cpu) for arm in (pairing.a, pairing.b)]
                if min(group.size for group in groups) == 0:
                    continue
                comparison = stats.contrast(groups, [1.0, -1.0, -1.0, 1.0], metric.higher_is_better, kind=RATIO,
                                            confidence=settings.confidence, prior=settings.prior(metric))
                rows.append(_row(comparison, _verdict(comparison, claim, metric, settings), scope,
                                 f"{gpu} vs {CPU_DEVICE}", model, pairing.label, metric.column))
    return rows


def evaluate_export_claim(claim: Claim, tables: dict, settings: _Settings):
    """Per device x pairing x model x metric x (format of a, format of b): a's exported model versus b's."""
    export = _require(tables["export"], "export")
    rows, notes = [], []
    for device in _devices(export):
        table = _on_device(export, device)
        for pairing in filter(lambda p: _arms_present(table, p), claim.pairings):
            for model in _unique(table["model"]):
                rows_found, note = _export_rows(claim, table, pairing, model, device, settings)
                rows += rows_found
                notes += note
    return rows, notes


def _export_rows(claim: Claim, table: pd.DataFrame, pairing: Pairing, model: str, device: str,
                 settings: _Settings):
    formats = {
        arm.framework: _unique(table.loc[(table["model"] == model) & (table["framework"] == arm.framework),
                                         "export_format"])
        for arm in (pairing.a, pairing.b)
    }
    absent = [framework for framework, found in formats.items() if not found]
    if absent:
        return [], [f"no export of {model} on {device} by {', '.join(absent)}"]
    rows = []
    for metric in claim.metrics:
        for format_a in formats[pairing.a.framework]:
            for format_b in formats[pairing.b.framework]:
                a = _arm_values(table, model, pairing.a, metric.column, {"export_format": format_a})
                b = _arm_values(table, model, pairing.b, metric.column, {"export_format": format_b})
                if not (a.size and b.size):
                    continue
                modes = f"{pairing.a.framework}:{format_a} vs {pairing.b.framework}:{format_b}"
                comparison = _compare(a, b, metric, settings)
                rows.append(_row(comparison, _verdict(comparison, claim, metric, settings),
                                 f"{metric.column}, {modes}", device, model, modes, metric.column))
    return rows, []


def evaluate_parity_claim(claim: Claim, tables: dict, settings: _Settings):
    """Per device x pairing x model: a minus b test accuracy, equivalent within the margin?"""
    accuracy = _require(tables["accuracy"], "accuracy")
    metric = claim.metrics[0]
    rows, notes = [], []
    for device in _devices(accuracy):
        table = _on_device(accuracy, device)
        for pairing in filter(lambda p: _arms_present(table, p), claim.pairings):
            scope = f"{pairing.label} {metric.column} (equivalence margin ±{settings.margins.accuracy:g})"
            for model in _unique(table["model"]):
                a = _arm_values(table, model, pairing.a, metric.column)
                b = _arm_values(table, model, pairing.b, metric.column)
                if not (a.size and b.size):
                    notes.append(f"no accuracy of {model} on {device} for both {pairing.label}")
                    continue
                comparison = _compare(a, b, metric, settings)
                rows.append(_row(comparison, _verdict(comparison, claim, metric, settings), scope, device, model,
                                 pairing.label, metric.column))
    return rows, notes


EVALUATORS = {
    "1": evaluate_pairing_claim,
    "1b": evaluate_size_trend,
    "2": evaluate_pairing_claim,
    "3": evaluate_pairing_claim,
    "4": evaluate_gpu_claim,
    "5": evaluate_export_claim,
    "6": evaluate_parity_claim,
    "keras": evaluate_pairing_claim,
}


CONTROL_METRICS = (THROUGHPUT, PEAK_MEMORY)


@dataclass(frozen=True)
class ControlResults:
    """The A/A controls: conditions judged like claims, and notes on controls that could not be judged."""

    rows: tuple[ConditionResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[ConditionResult, ...]:
        """Controls that found a difference between a variant and itself: the machine was too unsteady."""
        return tuple(row for row in self.rows if row.verdict in FAILED_CONTROL_VERDICTS)


def evaluate_controls(bench_df: pd.DataFrame | None, controls, *, confidence: float = stats.DEFAULT_CONFIDENCE,
                      margins: Margins = Margins()) -> ControlResults:
    """A/A: each control variant (framework, model, mode) split by process, even replicates against odd ones.

    Judged with the speed and memory margins like any claim of "a is better";
    both sides are the same code, so "supported" or "contradicted" means the
    machine moved more between processes than the intervals allow for.
    """
    bench = _checked_table(bench_df, BENCH_COLUMNS, BENCH_NUMERIC, "bench")
    if bench is None:
        return ControlResults((), ("no bench table: no control measured",))
    # The control compares halves of a variant (even and odd processes): the prior is fitted to such halves.
    halves = bench.assign(**{REPLICATE_PARITY: bench[PROCESS_COLUMN] % 2})
    settings = _Settings(confidence, margins, variance_priors({"bench": halves}, extra_keys=(REPLICATE_PARITY,)))
    rows, notes = [], []
    for device in _devices(bench):
        table = _on_device(bench, device)
        for framework, model, mode in controls:
            variant = table[(table["framework"] == framework) & (table["model"] == model) & (table["mode"] == mode)]
            even = variant[variant[PROCESS_COLUMN] % 2 == 0]
            odd = variant[variant[PROCESS_COLUMN] % 2 == 1]
            label = f"{framework}:{mode} even vs odd replicates"
            if even.empty or odd.empty:
                notes.append(f"{device} | {model} | {label}: needs at least one even and one odd replicate")
                continue
            arm = Arm(framework, mode)
            for metric in CONTROL_METRICS:
                a = _arm_values(even, model, arm, metric.column)
                b = _arm_values(odd, model, arm, metric.column)
                if not (a.size and b.size):
                    continue
                comparison = _compare(a, b, metric, settings)
                verdict = stats.verdict(comparison, A_BETTER, margins.of(metric))
                rows.append(_row(comparison, verdict, label, device, model, label, metric.column))
    return ControlResults(tuple(rows), tuple(notes))


def overall_line(rows: list[ConditionResult]) -> str:
    """Verdict counts, then per scope which models (and devices) each verdict held for.

    e.g. "3 conditions: supported in 2, contradicted in 1. tf:graph vs
    torch:eager: supported for convnet, lenet; contradicted for linear."
    """
    tally = Counter(row.verdict for row in rows)
    counts = ", ".join(f"{verdict} in {tally[verdict]}" for verdict in VERDICTS if tally[verdict])
    several_devices = len({row.device for row in rows}) > 1
    parts = [f"{len(rows)} conditions: {counts}"]
    for scope in _unique(row.scope for row in rows):
        scoped = [row for row in rows if row.scope == scope]
        subjects = {verdict: [] for verdict in VERDICTS}
        for row in scoped:
            subjects[row.verdict].append(f"{row.model} on {row.device}" if several_devices else row.model)
        held = {verdict: names for verdict, names in subjects.items() if names}
        if len(held) == 1 and len(scoped) > 1:
            parts.append(f"{scope}: {next(iter(held))} in all {len(scoped)}")
        else:
            listed = "; ".join(f"{verdict} for {', '.join(names)}" for verdict, names in held.items())
            parts.append(f"{scope}: {listed}")
    return ". ".join(parts) + "."


def conditions_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """Every condition of every measured claim as one table, for the report."""
    records = [{"claim": result.claim_id, **row.__dict__} for result in results for row in result.rows]
    return pd.DataFrame.from_records(records, columns=["claim", *ConditionResult.__dataclass_fields__])
