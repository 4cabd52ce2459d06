"""Sweeps over batch size and threads: the grid, its validation, and the verdicts per setting."""

import re

import pandas as pd
import pytest

from conftest import CONFIG_DIR, run_snakemake
from fwbench import sweep
from fwbench.bench.grid import (
    auto_threads,
    bench_grid,
    bench_schedule,
    check_settings,
    control_variants,
    reference_setting,
    window_steps,
)
from fwbench.claims import BENCH_COLUMNS
from fwbench.config import compose_config
from fwbench.errors import ConfigError
from fwbench.stats import CONTRADICTED, NO_MEANINGFUL_DIFFERENCE, SUPPORTED

SWEEP = ["experiment=sweep", "bench.threads=[1,2]"]  # auto would follow the test machine's cores


# ---------------------------------------------------------------- the grid


def test_sweep_grid_is_every_variant_at_every_batch_size_and_thread_count():
    cfg = compose_config(CONFIG_DIR, SWEEP)
    grid = bench_grid(cfg)
    expected = {(framework, model, mode, batch, threads)
                for framework, mode in (("tf", "graph"), ("torch", "eager"))
                for model in ("mlp", "convnet") for batch in (1, 8, 32, 128, 512) for threads in (1, 2)}
    assert len(grid) == len(expected) == 40 and set(grid) == expected
    # The A/A controls run at the reference setting only: trainer.batch_size at the most threads.
    assert reference_setting(cfg) == (128, 2)
    assert set(control_variants(cfg)) == {("tf", "convnet", "graph", 128, 2), ("torch", "convnet", "eager", 128, 2)}
    schedule = bench_schedule(cfg)
    assert len(schedule) == 40 * 3 + 2
    # Settings are interleaved like frameworks: the first block's first half holds every batch size.
    first_half = [job.batch_size for job in schedule if job.block == 0][:20]
    assert set(first_half) == {1, 8, 32, 128, 512}


def test_default_grid_has_one_setting():
    cfg = compose_config(CONFIG_DIR, ["experiment=default"])
    assert {(batch, threads) for *_, batch, threads in bench_grid(cfg)} == {(128, 2)}


@pytest.mark.parametrize("cores, expected", [(1, [1]), (2, [1, 2]), (6, [1, 2, 4]), (64, [1, 2, 4, 8, 16, 32, 64])])
def test_auto_threads_are_powers_of_two_up_to_the_cores(cores, expected):
    assert auto_threads(cores) == expected


def test_window_steps_keep_the_samples_per_window_and_at_most_one_epoch():
    cfg = compose_config(CONFIG_DIR, SWEEP)
    at_reference = window_steps(cfg, "tf", "convnet", "graph", 128)
    assert window_steps(cfg, "tf", "convnet", "graph", 32) == at_reference * 4
    assert window_steps(cfg, "tf", "mlp", "graph", 1) == cfg.bench.max_window_steps
    # 55,000 training samples at 512: 107 steps, of which 3 warm-up + 1 trailing, over 5 windows + memory phase.
    assert window_steps(cfg, "tf", "mlp", "graph", 512) == (107 - 4) // 6


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("override, named", [
    ("bench.batch_sizes=[0,128]", "bench.batch_sizes has 0: accepted are integers > 0"),
    ("bench.batch_sizes=[1.5,128]", "bench.batch_sizes has 1.5: accepted are integers > 0"),
    ("bench.threads=[1,-2]", "bench.threads has -2: accepted are integers > 0"),
    ("bench.threads=two", "bench.threads='two' is invalid"),
    ("bench.batch_sizes=[1,8]", "bench.batch_sizes=[1, 8] lacks trainer.batch_size=128"),
])
def test_bad_batch_sizes_and_thread_counts_name_the_value(override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        compose_config(CONFIG_DIR, ["experiment=sweep", override])


def test_more_threads_than_cores_names_the_count():
    cfg = compose_config(CONFIG_DIR, ["experiment=sweep", "bench.threads=[1,2,4]"])
    check_settings(cfg, cores=4)
    with pytest.raises(ConfigError, match=re.escape("bench.threads has 4, more than the 2 cores a job may have")):
        check_settings(cfg, cores=2)


@pytest.mark.parametrize("args, named", [
    (["--cores", "1", "--config", "experiment=sweep", "overrides=bench.threads=[1,2]"],
     "bench.threads has 2, more than the 1 cores a job may have here"),
    (["--cores", "2", "--config", "experiment=sweep", "overrides=bench.batch_sizes=[-1,128]"],
     "bench.batch_sizes has -1: accepted are integers > 0"),
])
def test_snakemake_refuses_a_bad_setting_while_building_the_dag(tmp_path, args, named):
    result = run_snakemake("-n", *args, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "fwbench: invalid config" in line]
    assert len(lines) == 1 and named in lines[0], result.stdout[-2000:] + result.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_snakemake_expands_auto_threads_once_for_every_job(tmp_path):
    """Dry run with 2 cores: auto is [1, 2], and every bench job is handed that list and its own threads."""
    result = run_snakemake("-n", "-p", "--cores", "2", "--config", "experiment=sweep",
                           f"overrides=paths.results={tmp_path}/results paths.data={tmp_path}/data", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines()
                if "scripts/bench.py" in line and "bench.replicate=" in line]  # not bench_table's aggregate
    assert len(commands) == 40 * 3 + 2
    assert all("'bench.threads=[1,2]'" in command for command in commands)
    threads = {re.search(r"b\d+-t(\d+)/r\d+\.log python .* threads=(\d+)", c).groups() for c in commands}
    assert threads == {("1", "1"), ("2", "2")}


# ---------------------------------------------------------------- verdicts per setting

BATCHES = (1, 8, 32, 128, 512)
PROCESSES = (0.99, 0.995, 1.0, 1.005, 1.01)


def crafted_sweep(tf_over_torch) -> pd.DataFrame:
    """tf:graph and torch:eager on one model at every batch size x threads; tf_over_torch(batch, threads) is
    tf's throughput over torch's. Five processes per variant, tight enough for clear verdicts."""
    rows = []
    for threads in (1, 2):
        for batch in BATCHES:
            for framework, mode in (("tf", "graph"), ("torch", "eager")):
                factor = tf_over_torch(batch, threads) if framework == "tf" else 1.0
                for replicate, jitter in enumerate(PROCESSES):
                    rows.append({
                        "device": "cpu", "framework": framework, "model": "mlp", "mode": mode,
                        "replicate": replicate, "window": 0,
                        "train_samples_per_s": 100.0 * batch ** 0.5 * threads * factor * jitter,
                        "first_step_s": 0.5, "infer_latency_p50_ms": 1.0, "infer_samples_per_s": 5000.0,
                        "peak_memory_mb": 200.0 * jitter, "parameter_count": 100, "flops_per_sample": 200,
                        "batch_size": batch, "threads": threads,
                    })
    return pd.DataFrame(rows, columns=[*BENCH_COLUMNS, "batch_size", "threads"])


def tf_wins_from_batch_128_at_two_threads(batch, threads):
    if threads == 1:
        return 1.3
    return 1.3 if batch >= 128 else (1.0 if batch == 32 else 0.7)


def claim_1_graph_vs_eager(condition_sweeps):
    (found,) = [s for s in condition_sweeps if s.claim_id == "1" and "tf:graph vs torch:eager" in s.label]
    return found


def test_each_setting_is_judged_on_its_own_processes():
    condition = claim_1_graph_vs_eager(sweep.claims_by_setting(crafted_sweep(tf_wins_from_batch_128_at_two_threads)))
    verdicts = {(p.batch_size, p.threads): p.verdict for p in condition.points}
    assert len(verdicts) == 10
    assert {verdicts[(batch, 1)] for batch in BATCHES} == {SUPPORTED}
    assert [verdicts[(batch, 2)] for batch in BATCHES] == [CONTRADICTED, CONTRADICTED, NO_MEANINGFUL_DIFFERENCE,
                                                           SUPPORTED, SUPPORTED]
    estimates = {(p.batch_size, p.threads): p.estimate for p in condition.points}
    assert estimates[(1, 2)] == pytest.approx(0.7) and estimates[(512, 2)] == pytest.approx(1.3)


def test_the_detail_names_where_the_verdict_flips():
    condition = claim_1_graph_vs_eager(sweep.claims_by_setting(crafted_sweep(tf_wins_from_batch_128_at_two_threads)))
    assert sweep.crossovers(condition, sweep.BATCH) == [
        "at threads 2: contradicted up to batch 8, no meaningful difference at batch 32, "
        "supported from batch 128 up"
    ]
    # Along the threads: at batch 128 and up both counts agree; below they differ.
    assert sweep.crossovers(condition, sweep.THREADS) == [
        "at batch 1: supported at threads 1, contradicted at threads 2",
        "at batch 8: supported at threads 1, contradicted at threads 2",
        "at batch 32: supported at threads 1, no meaningful difference at threads 2",
    ]


def test_a_verdict_that_holds_everywhere_has_no_crossover():
    condition = claim_1_graph_vs_eager(sweep.claims_by_setting(crafted_sweep(lambda batch, threads: 1.3)))
    assert sweep.crossovers(condition, sweep.BATCH) == sweep.crossovers(condition, sweep.THREADS) == []
    assert sweep.describe_along(condition.along(sweep.BATCH, 2), sweep.BATCH) == \
        "supported at every batch size (1, 8, 32, 128, 512)"


def test_report_section_lists_the_crossover_and_every_setting(tmp_path):
    from fwbench.claims import Margins
    from fwbench.reporting.sweep_report import sweep_sections

    table = crafted_sweep(tf_wins_from_batch_128_at_two_threads)
    table["infer_batch_size"] = table["batch_size"]
    condition_sweeps = sweep.claims_by_setting(table, 0.95, Margins())
    sections = {s.anchor: s for s in sweep_sections(table, (128, 2), condition_sweeps, 0.95, tmp_path)}
    assert set(sections) == {"sweep", "parallel-efficiency", "claims-by-setting"}
    verdicts = sections["claims-by-setting"]
    assert ("at threads 2: contradicted up to batch 8, no meaningful difference at batch 32, supported from "
            "batch 128 up") in verdicts.paragraphs[1]
    along_batch, along_threads = verdicts.tables
    assert along_batch.header[-6:] == ["batch 1", "batch 8", "batch 32", "batch 128", "batch 512",
                                       "where the verdict flips"]
    # Along the batch sizes one row per condition and thread count; along the threads one per batch size.
    assert len(along_threads.rows) == len(along_batch.rows) // 2 * 5
    # Parallel efficiency: the crafted throughput doubles with 2 threads (torch always; tf at its own factor).
    efficiency = sections["parallel-efficiency"].tables[0]
    torch_rows = [row for row in efficiency.rows if row[1] == "PyTorch"]
    assert torch_rows and all(row[5].startswith("2.00") and row[6].startswith("100") for row in torch_rows)
    for path, _ in sections["sweep"].figures:
        assert path.exists() and path.stat().st_size > 0


def test_report_sections_are_absent_for_one_setting(tmp_path):
    from fwbench.reporting.sweep_report import sweep_sections

    one_setting = sweep.at_setting(crafted_sweep(lambda batch, threads: 1.3), 128, 2)
    assert sweep_sections(one_setting, (128, 2), [], 0.95, tmp_path) == []


def test_claims_table_holds_every_setting_for_compare_reports(tmp_path):
    """claims.csv gets each condition at each setting under its own claim name, unique per (claim, label, metric)."""
    from fwbench.reporting.build import claims_table
    from fwbench.claims import ControlResults
    from fwbench.reporting.compare import KEY_COLUMNS

    condition_sweeps = sweep.claims_by_setting(crafted_sweep(tf_wins_from_batch_128_at_two_threads))
    table = claims_table([], ControlResults((), ()), condition_sweeps)
    assert not table.duplicated(list(KEY_COLUMNS)).any()
    row = table[(table["claim"] == "1 at batch 8, 2 threads") & table["label"].str.contains("tf:graph vs torch:eager")]
    assert list(row["verdict"]) == [CONTRADICTED] and row["estimate"].iloc[0] == pytest.approx(0.7)


@pytest.mark.slow
def test_a_small_sweep_end_to_end(tmp_path):
    """The sweep experiment through Snakemake on digits, cut to torch eager on the MLP at two batch sizes and
    two thread counts: every setting benched, the report's sweep sections written from them."""
    from conftest import redirected_paths

    overrides = " ".join([
        "dataset=digits", "bench=smoke", "experiment.frameworks=[torch]", "bench.frameworks=[torch]", "experiment.models=[mlp]",
        "experiment.seeds=[0]", "trainer.epochs=1", "bench.batch_sizes=[32,128]", "bench.threads=[1,2]",
        "bench.control_model=mlp", "trainer.eval_batch_size=64", *redirected_paths(tmp_path),
    ])
    result = run_snakemake("--cores", "2", "--config", "experiment=sweep", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    bench = pd.read_csv(tmp_path / "results/sweep/digits/bench/bench_results.csv")
    assert set(zip(bench["batch_size"], bench["threads"])) == {(32, 1), (32, 2), (128, 1), (128, 2)}
    assert set(zip(bench["threads"], bench["intra_op_threads"])) == {(1, 1), (2, 2)}
    assert set(zip(bench["batch_size"], bench["infer_batch_size"])) == {(32, 32), (128, 128)}
    report = (tmp_path / "reports/sweep/comparison.md").read_text()
    for heading in ("Batch size and threads", "Parallel efficiency", "The claims at every batch size and thread count"):
        assert f"## {heading}" in report
    assert (tmp_path / "reports/sweep/figures/sweep_batch_size.png").stat().st_size > 0
    results = pd.read_csv(tmp_path / "reports/sweep/results.csv", low_memory=False)
    assert set(results.loc[results["source"] == "bench", "batch_size"].astype(int)) == {32, 128}
