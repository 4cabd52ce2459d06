"""The claim catalogue and evaluate_claims, on constructed tables whose verdicts are known."""

import math

import numpy as np
import pandas as pd
import pytest

from fwbench import claims
from fwbench.claims import (
    ACCURACY_COLUMNS,
    BENCH_COLUMNS,
    CLAIMS,
    EVALUATORS,
    EXPORT_COLUMNS,
    MEASURED,
    NOT_MEASURED,
    UNMEASURED_CLAIMS,
    Margins,
    conditions_frame,
    evaluate_claims,
    evaluate_controls,
)
from fwbench.errors import ConfigError, DataError
from fwbench.stats import CONTRADICTED, INCONCLUSIVE, NO_MEANINGFUL_DIFFERENCE, SUPPORTED

# Multiplicative spread of +-1 % over five processes: wide enough for an interval,
# narrow enough that a 20 % gap is clear and an equal speed is within the 5 % margin.
JITTER = (0.99, 0.995, 1.0, 1.005, 1.01)
# Each process's windows around its mean: averaged away before any interval.
WINDOW_JITTER = (0.97, 1.03)
# model -> (parameters, FLOPs per sample); sizes in increasing FLOPs order.
MODELS = {"linear": (7_850, 15_700), "lenet": (61_706, 800_000), "convnet": (34_826, 2_000_000)}
MODES = {"tf": ("eager", "graph", "xla"), "torch": ("eager", "compile")}
BASE_SPEED = 1000.0
BASE_MEMORY = 200.0


def bench_table(speed: dict | None = None, devices=("cpu",), memory: dict | None = None,
                process_jitter=JITTER) -> pd.DataFrame:
    """Five processes of two windows each per device x framework x model x mode.

    speed[(arm, model)] or speed[(arm, model, device)] scales throughput (default 1);
    memory[framework] scales peak memory.
    """
    speed, memory = speed or {}, memory or {}
    rows = []
    for device in devices:
        for model, (params, flops) in MODELS.items():
            for framework, modes in MODES.items():
                for mode in modes:
                    arm = f"{framework}:{mode}"
                    factor = speed.get((arm, model, device), speed.get((arm, model), 1.0))
                    for replicate, jitter in enumerate(process_jitter):
                        for window, window_jitter in enumerate(WINDOW_JITTER):
                            rows.append({
                                "device": device, "framework": framework, "model": model, "mode": mode,
                                "replicate": replicate, "window": window,
                                "train_samples_per_s": BASE_SPEED * factor * jitter * window_jitter,
                                "first_step_s": 0.5, "infer_latency_p50_ms": 1.0,
                                "infer_samples_per_s": 5000.0,
                                "peak_memory_mb": BASE_MEMORY * memory.get(framework, 1.0) * jitter,
                                "parameter_count": params, "flops_per_sample": flops,
                            })
    return pd.DataFrame(rows, columns=BENCH_COLUMNS)


def accuracy_table(tf_shift: float = 0.0, seeds=(0, 1, 2, 3, 4)) -> pd.DataFrame:
    spread = (0.951, 0.953, 0.949, 0.952, 0.950)
    rows = [
        {"framework": framework, "model": model, "seed": seed,
         "test_accuracy": spread[seed] + (tf_shift if framework == "tf" else 0.0)}
        for framework in ("tf", "torch") for model in MODELS for seed in seeds
    ]
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def export_table() -> pd.DataFrame:
    """TF's export half the size of torch's; load time and parity equal within noise."""
    rows = []
    for framework, fmt, size in (("tf", "savedmodel", 1.0), ("torch", "torchscript", 2.0)):
        for model in MODELS:
            for seed, jitter in enumerate(JITTER):
                rows.append({
                    "framework": framework, "model": model, "seed": seed, "export_format": fmt,
                    "export_size_mb": size * jitter, "load_time_s": 0.2 * JITTER[-1 - seed],
                    "first_prediction_ms": 3.0 * JITTER[seed - 2], "prediction_parity": 1.0,
                })
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS)


def by_id(results, claim_id):
    (result,) = [r for r in results if r.claim_id == claim_id]
    return result


def evaluate(bench=None, accuracy=None, export=None, **kwargs):
    return evaluate_claims(bench, accuracy, export, **kwargs)


def test_catalogue_is_complete():
    assert [claim.id for claim in CLAIMS] == list(EVALUATORS)
    assert all(claim.text and claim.conditions for claim in CLAIMS)
    assert {u.id for u in UNMEASURED_CLAIMS} >= {"community", "ecosystem", "ease of use"}
    assert all(u.reason for u in UNMEASURED_CLAIMS)


def test_verdict_flips_by_model_and_the_overall_line_says_where():
    # tf:graph 20 % faster for lenet and convnet, 20 % slower for linear.
    speed = {("tf:graph", "lenet"): 1.2, ("tf:graph", "convnet"): 1.2, ("tf:graph", "linear"): 0.8}
    result = by_id(evaluate(bench_table(speed)), "1")
    graph_rows = {row.model: row.verdict for row in result.rows if row.modes == "tf:graph vs torch:eager"}
    assert graph_rows == {"linear": CONTRADICTED, "lenet": SUPPORTED, "convnet": SUPPORTED}
    # The other pairings are equal speed: within the margin everywhere.
    assert result.counts == {SUPPORTED: 2, CONTRADICTED: 1, NO_MEANINGFUL_DIFFERENCE: 6, INCONCLUSIVE: 0}
    assert result.overall.startswith("9 conditions: supported in 2, contradicted in 1, no meaningful difference in 6.")
    assert "tf:graph vs torch:eager: supported for lenet, convnet; contradicted for linear" in result.overall
    assert "tf:xla vs torch:compile: no meaningful difference in all 3" in result.overall


def test_a_difference_smaller_than_the_speed_margin_is_no_meaningful_difference():
    # tf:graph 2 % faster, with a tight interval that excludes 1: not a verdict.
    result = by_id(evaluate(bench_table({("tf:graph", "lenet"): 1.02})), "1")
    (row,) = [r for r in result.rows if r.model == "lenet" and r.modes == "tf:graph vs torch:eager"]
    assert row.ci_low > 1.0
    assert row.verdict == NO_MEANINGFUL_DIFFERENCE
    wide_margin = by_id(evaluate(bench_table({("tf:graph", "lenet"): 1.2}), margins=Margins(speed=0.5)), "1")
    (row,) = [r for r in wide_margin.rows if r.model == "lenet" and r.modes == "tf:graph vs torch:eager"]
    assert row.verdict == NO_MEANINGFUL_DIFFERENCE


def test_a_difference_that_straddles_the_margin_is_inconclusive():
    spread = (0.9, 1.0, 1.1, 0.95, 1.05)
    result = by_id(evaluate(bench_table({("tf:graph", "lenet"): 1.05}, process_jitter=spread)), "1")
    (row,) = [r for r in result.rows if r.model == "lenet" and r.modes == "tf:graph vs torch:eager"]
    assert row.ci_low < 1.05 < row.ci_high
    assert row.verdict == INCONCLUSIVE


def test_intervals_are_over_processes_not_windows():
    """Two processes per side: the interval has 2 units a side however many windows each holds."""
    bench = bench_table({("tf:graph", "lenet"): 1.2}, process_jitter=(0.99, 1.01))
    result = by_id(evaluate(bench), "1")
    (row,) = [r for r in result.rows if r.model == "lenet" and r.modes == "tf:graph vs torch:eager"]
    assert (row.n_a, row.n_b) == (2, 2)
    assert "Welch" in row.method


def test_margins_must_be_positive():
    with pytest.raises(ConfigError, match="claims.speed_margin"):
        evaluate(bench_table(), margins=Margins(speed=0.0))


def test_rows_carry_estimate_interval_and_n():
    result = by_id(evaluate(bench_table({("tf:graph", "lenet"): 1.2})), "1")
    (row,) = [r for r in result.rows if r.model == "lenet" and r.modes == "tf:graph vs torch:eager"]
    assert row.estimate == pytest.approx(1.2)
    assert row.ci_low < row.estimate < row.ci_high
    assert (row.device, row.n_a, row.n_b, row.metric) == ("cpu", 5, 5, "train_samples_per_s")
    assert row.label == "cpu | lenet | tf:graph vs torch:eager"


def test_compile_recovers_speed_claim_2():
    speed = {("torch:compile", model): 1.3 for model in MODELS}
    result = by_id(evaluate(bench_table(speed)), "2")
    compile_rows = [r for r in result.rows if r.modes == "torch:compile vs torch:eager"]
    assert [r.verdict for r in compile_rows] == [SUPPORTED] * len(MODELS)


def test_memory_claim_3_lower_is_better():
    result = by_id(evaluate(bench_table(memory={"tf": 0.7})), "3")
    assert result.counts[SUPPORTED] == len(result.rows) > 0


def fitted_change(ratios_by_model: dict[str, float]) -> float:
    """The least-squares line of log ratio on log FLOPs, as the change of the ratio across the models."""
    x = np.log([MODELS[m][1] for m in ratios_by_model])
    y = np.log(list(ratios_by_model.values()))
    slope = np.polyfit(x, y, 1)[0]
    return float(np.exp(slope * (x.max() - x.min())))


def test_size_trend_claim_1b_is_one_slope_over_every_model():
    speed = {("tf:graph", "linear"): 1.0, ("tf:graph", "lenet"): 1.2, ("tf:graph", "convnet"): 1.5}
    result = by_id(evaluate(bench_table(speed)), "1b")
    (row,) = [r for r in result.rows if r.modes == "tf:graph vs torch:eager"]
    assert row.model == "3 models, linear to convnet"
    assert row.estimate == pytest.approx(fitted_change({"linear": 1.0, "lenet": 1.2, "convnet": 1.5}), rel=1e-3)
    assert row.verdict == SUPPORTED
    (note,) = [n for n in result.notes if "tf:graph vs torch:eager" in n]
    assert "least-squares line" in note and "supported" in note and "lenet 1.2" in note


def test_size_trend_that_rises_then_falls_is_judged_by_the_same_slope():
    # The largest model's ratio is back at the smallest's: the slope, not the two ends, decides.
    speed = {("tf:graph", "linear"): 1.0, ("tf:graph", "lenet"): 1.5, ("tf:graph", "convnet"): 1.0}
    result = by_id(evaluate(bench_table(speed)), "1b")
    (row,) = [r for r in result.rows if r.modes == "tf:graph vs torch:eager"]
    assert row.estimate == pytest.approx(fitted_change({"linear": 1.0, "lenet": 1.5, "convnet": 1.0}), rel=1e-3)
    (note,) = [n for n in result.notes if "tf:graph vs torch:eager" in n]
    assert note.endswith(row.verdict)


def test_equal_speed_at_every_size_is_no_meaningful_trend():
    result = by_id(evaluate(bench_table()), "1b")
    assert {row.verdict for row in result.rows} == {NO_MEANINGFUL_DIFFERENCE}


def test_gpu_claim_4_not_measured_without_gpu_rows():
    result = by_id(evaluate(bench_table()), "4")
    assert result.status == NOT_MEASURED
    assert result.rows == ()
    assert "no GPU rows" in result.overall and "cpu" in result.overall


def test_gpu_claim_4_measured_with_gpu_rows_and_compared_with_cpu():
    speed = {(arm, model, "cuda"): 1.5 for arm in ("torch:eager", "torch:compile") for model in MODELS}
    result = by_id(evaluate(bench_table(speed, devices=("cpu", "cuda"))), "4")
    assert result.status == MEASURED
    on_gpu = [r for r in result.rows if r.device == "cuda"]
    over_cpu = [r for r in result.rows if r.device == "cuda vs cpu"]
    assert on_gpu and over_cpu
    assert all(r.verdict == SUPPORTED for r in on_gpu + over_cpu)
    assert any("CUDA cores" in note for note in result.notes)


def test_export_claim_5_not_measured_without_export_table():
    result = by_id(evaluate(bench_table()), "5")
    assert result.status == NOT_MEASURED
    assert "no export table" in result.overall


def test_export_claim_5_per_metric():
    result = by_id(evaluate(export=export_table()), "5")
    verdicts = {}
    for row in result.rows:
        verdicts.setdefault(row.metric, set()).add(row.verdict)
    assert verdicts["export_size_mb"] == {SUPPORTED}
    assert verdicts["load_time_s"] <= {INCONCLUSIVE, NO_MEANINGFUL_DIFFERENCE}
    # Perfect parity on both sides: no spread, no difference.
    assert verdicts["prediction_parity"] == {NO_MEANINGFUL_DIFFERENCE}
    assert "export_size_mb, tf:savedmodel vs torch:torchscript: supported in all 3" in result.overall


# A shift of exactly one margin: the interval straddles -margin, size undecided.
@pytest.mark.parametrize("tf_shift, expected", [(0.0, SUPPORTED), (-0.05, CONTRADICTED), (-0.015, INCONCLUSIVE)])
def test_accuracy_parity_claim_6(tf_shift, expected):
    result = by_id(evaluate(accuracy=accuracy_table(tf_shift)), "6")
    assert {row.verdict for row in result.rows} == {expected}
    assert all(row.kind == "difference" for row in result.rows)


def test_accuracy_parity_with_one_seed_is_inconclusive():
    result = by_id(evaluate(accuracy=accuracy_table(seeds=(0,))), "6")
    assert result.status == MEASURED
    assert {row.verdict for row in result.rows} == {INCONCLUSIVE}
    assert all(math.isnan(row.ci_low) for row in result.rows)


def test_accuracy_margin_is_a_parameter():
    narrow = by_id(evaluate(accuracy=accuracy_table(-0.015)), "6")
    wide = by_id(evaluate(accuracy=accuracy_table(-0.015), margins=Margins(accuracy=0.05)), "6")
    assert {row.verdict for row in narrow.rows} == {INCONCLUSIVE}
    assert {row.verdict for row in wide.rows} == {SUPPORTED}


def test_without_any_table_every_claim_is_not_measured():
    results = evaluate()
    assert [r.claim_id for r in results] == [c.id for c in CLAIMS]
    assert {r.status for r in results} == {NOT_MEASURED}
    assert all(r.overall.startswith(NOT_MEASURED) for r in results)


def test_missing_mode_is_noted_not_guessed():
    bench = bench_table()
    bench = bench[~((bench["mode"] == "compile") & (bench["model"] == "lenet"))]
    result = by_id(evaluate(bench), "1")
    assert not [r for r in result.rows if r.model == "lenet" and "compile" in r.modes]
    assert "no data for torch:compile on cpu (models: lenet)" in result.notes


def test_same_inputs_give_the_same_report():
    bench = bench_table({("tf:graph", "lenet"): 1.1})
    first = conditions_frame(evaluate(bench, accuracy_table(), export_table()))
    again = conditions_frame(evaluate(bench, accuracy_table(), export_table()))
    assert len(first) > 0
    assert first.equals(again)


def test_table_lacking_a_column_raises_data_error():
    with pytest.raises(DataError, match="peak_memory_mb"):
        evaluate(bench_table().drop(columns=["peak_memory_mb"]))


def test_non_numeric_metric_raises_data_error():
    bench = bench_table()
    bench["train_samples_per_s"] = bench["train_samples_per_s"].astype(str)
    with pytest.raises(DataError, match="train_samples_per_s"):
        evaluate(bench)


def test_accuracy_in_percent_raises_data_error():
    accuracy = accuracy_table()
    accuracy["test_accuracy"] *= 100
    with pytest.raises(DataError, match="fractions"):
        evaluate(accuracy=accuracy)


def test_gpu_device_names():
    assert claims.is_gpu("cuda") and claims.is_gpu("cuda:0") and claims.is_gpu("GPU")
    assert not claims.is_gpu("cpu")


def test_conditions_frame_has_one_row_per_condition():
    results = evaluate(bench_table(), accuracy_table())
    frame = conditions_frame(results)
    assert len(frame) == sum(len(r.rows) for r in results)
    assert {"claim", "label", "estimate", "ci_low", "ci_high", "verdict", "n_a", "n_b"} <= set(frame.columns)
    assert np.isfinite(frame["estimate"]).all()


# ---------------------------------------------------------------- A/A controls

CONTROLS = [("tf", "convnet", "graph"), ("torch", "convnet", "eager")]


def test_a_steady_machine_passes_its_controls():
    controls = evaluate_controls(bench_table(process_jitter=(1.0, 1.002, 0.999, 1.001)), CONTROLS)
    assert {row.verdict for row in controls.rows} <= {NO_MEANINGFUL_DIFFERENCE, INCONCLUSIVE}
    assert len(controls.rows) == 2 * len(CONTROLS)  # throughput and memory per framework
    assert controls.failed == ()


def test_a_machine_that_slowed_down_between_processes_fails_its_control():
    # Even replicates 30 % faster than odd ones: a variant differs from itself.
    bench = bench_table(process_jitter=(1.3, 1.0, 1.31, 1.01))
    controls = evaluate_controls(bench, CONTROLS)
    failed = {(row.scope, row.metric) for row in controls.failed}
    assert ("tf:graph even vs odd replicates", "train_samples_per_s") in failed
    assert ("torch:eager even vs odd replicates", "train_samples_per_s") in failed


def test_a_control_needs_an_even_and_an_odd_replicate():
    controls = evaluate_controls(bench_table(process_jitter=(1.0,)), CONTROLS)
    assert controls.rows == ()
    assert any("even and one odd" in note for note in controls.notes)
