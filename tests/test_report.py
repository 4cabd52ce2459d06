"""The report: structure on constructed results, and the rendered page in headless Chromium."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from browser import check_report_page
from conftest import PROJECT_ROOT
from fwbench.frameworks.registry import FRAMEWORKS

# How a bench table marks a model benched on synthetic data.
SYNTHETIC_MARK = " (synthetic data)"
COMMITTED_REPORTS = sorted((PROJECT_ROOT / "reports").glob("*/comparison.html"))


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_renders_in_chromium(html_path):
    check_report_page(html_path, f"{html_path.parent.name}.png", article_claims_only=True)


def provenance_fact(markdown: str, name: str) -> str:
    """A row of the report's provenance facts: `| name | value |`."""
    return re.search(rf"^\| {re.escape(name)} \| (.+) \|$", markdown, re.MULTILINE).group(1)


def cpu_slug(cpu_model: str) -> str:
    """'Intel(R) Xeon(R) Processor @ 2.80GHz' -> 'intel-xeon-2.80ghz', 'AMD EPYC' -> 'amd-epyc'."""
    name = re.sub(r"\((r|tm)\)", "", cpu_model.lower())
    name = re.sub(r"\b(processor|cpu)\b", "", name)
    return "-".join(name.replace("@", " ").split())


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_folder_names_the_cpu_its_jobs_ran_on(html_path):
    """reports/<experiment>-cpu-<cpu>-<n>core: the name says where the numbers came from, as the jobs recorded it
    (three folders once named a CPU their runs did not have)."""
    markdown = (html_path.parent / "comparison.md").read_text()
    if provenance_fact(markdown, "device(s)") != "cpu":
        pytest.skip("a GPU report is named after its GPU")
    experiment = provenance_fact(markdown, "experiment / dataset").split(" / ")[0]
    cpu_model, cores = re.match(r"(.+?), (\d+) cores", provenance_fact(markdown, "machine")).groups()
    assert html_path.parent.name == f"{experiment}-cpu-{cpu_slug(cpu_model)}-{cores}core"


FRAMEWORK_KEYS = {spec.display_name: key for key, spec in FRAMEWORKS.items()}  # as the report prints them
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def markdown_table(markdown: str, section: str) -> list[dict[str, str]]:
    """The first table under `## <section>`, one dict per row keyed by the header cells."""
    lines = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[2:]]


def leading_number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


@pytest.mark.parametrize("html_path", COMMITTED_REPORTS, ids=lambda p: p.parent.name)
def test_committed_report_numbers_trace_to_results_and_runs(html_path):
    """Accuracy means, throughput and memory medians recomputed from results.csv beside the
    report match the printed numbers, and every row of results.csv names its MLflow run."""
    markdown = (html_path.parent / "comparison.md").read_text()
    results = pd.read_csv(html_path.parent / "results.csv", dtype={"mlflow_run_id": str})
    assert results["mlflow_run_id"].fillna("").str.match(RUN_ID).all()
    results["value"] = pd.to_numeric(results["value"], errors="coerce")  # a few are text (CUDA version "")

    accuracy = results[(results.source == "evaluate") & (results.metric == "test_accuracy")]
    for row in markdown_table(markdown, "Accuracy"):
        values = accuracy[(accuracy.model == row["model"]) & (accuracy.framework == FRAMEWORK_KEYS[row["framework"]])]
        assert len(values) == int(row["seeds"])
        assert leading_number(row["test accuracy %, mean ± 95 % CI"]) == pytest.approx(100 * values.value.mean(), abs=0.005)

    bench = results[results.source == "bench"]
    # A sweep's main tables are at its reference setting, which its sweep section names.
    reference = re.search(r"reference setting \(batch (\d+), (\d+) threads\)", markdown)
    if reference:
        batch, threads = (int(value) for value in reference.groups())
        bench = bench[(bench["batch_size"] == batch) & (bench["threads"] == threads)]
    for section, metric, column, digits in (
        ("Training throughput by mode", "train_samples_per_s", "samples/s, mean [95 % CI]", 0.5),
        ("Peak memory", "peak_memory_mb", "claimed memory MB (anonymous peak above baseline on the CPU)", 0.05),
    ):
        rows = markdown_table(markdown, section)
        assert rows, section
        for row in rows:
            model = row["model"].removesuffix(SYNTHETIC_MARK)
            values = bench[(bench.model == model) & (bench.framework == FRAMEWORK_KEYS[row["framework"]])
                           & (bench["mode"] == row["mode"]) & (bench.metric == metric)]
            per_process = values.groupby("replicate").value.mean()
            assert len(per_process) == int(row["processes"]), (section, row)
            # A printed number is within half its last digit of the value; 1e-9 more for a value at exactly half
            # (348.75 printed 348.8), which floating point puts a hair beyond it.
            assert leading_number(row[column]) == pytest.approx(per_process.mean(), abs=digits + 1e-9), (section, row)


def bench_rows(rates_by_process: dict) -> pd.DataFrame:
    """(framework, mode) -> a list of processes, each a list of window throughputs (convnet, CPU)."""
    from fwbench.reporting.tables import with_claim_columns

    rows = []
    position = 0
    for (framework, mode), processes in rates_by_process.items():
        for replicate, rates in enumerate(processes):
            for window, rate in enumerate(rates):
                rows.append({"framework": framework, "model": "convnet", "mode": mode, "batch_size": 128, "threads": 2,
                             "replicate": replicate,
                             "window": window, "schedule_position": position, "schedule_block": replicate,
                             "device": "cpu", "train_samples_per_s": rate, "first_step_s": 1.0,
                             "infer_latency_p50_ms": 1.0, "infer_latency_p95_ms": 1.0, "infer_latency_p99_ms": 1.0,
                             "infer_samples_per_s": 1.0, "peak_rss_train_mb": 900.0, "peak_device_train_mb": float("nan"),
                             "peak_anon_train_mb": 50.0 + replicate, "rss_file_after_train_mb": 400.0,
                             "background_cpu_share": 0.01, "steal_cpu_share": 0.0, "parameter_count": 34826, "flops_per_sample": 1e6})
            position += 1
    return with_claim_columns(pd.DataFrame(rows))


def test_throughput_table_shows_the_between_and_within_process_spread(tmp_path):
    from fwbench.reporting.build import bench_sections

    # Rows come in the schedule's order (torch first here); the table lists them in report order.
    bench = bench_rows({("torch", "eager"): [[100, 100], [100, 100]], ("tf", "graph"): [[100, 110], [200, 220]]})
    section = bench_sections(bench, tmp_path, {"convnet": "convnet"})[0]
    assert section.anchor == "throughput"
    table = section.tables[0]
    assert table.header[3:] == ["processes", "samples/s, mean [95 % CI]", "between CV %", "within CV %"]
    tf_row, torch_row = table.rows
    assert tf_row[3] == "2"
    assert leading_number(tf_row[4]) == pytest.approx(157.5, abs=0.5)  # mean of the process means 105, 210
    assert float(tf_row[5]) == pytest.approx(100 * pd.Series([105, 210]).std() / 157.5, abs=0.05)
    within = 100 * (pd.Series([100, 110]).std() / 105 + pd.Series([200, 220]).std() / 210) / 2
    assert float(tf_row[6]) == pytest.approx(within, abs=0.05)
    assert (torch_row[5], torch_row[6]) == ("0.0", "0.0")


def test_every_window_is_listed_in_the_order_the_processes_ran():
    from fwbench.reporting.build import windows_section

    bench = bench_rows({("tf", "graph"): [[100, 110, 120]], ("torch", "eager"): [[90, 95, 97]]})
    (table,) = windows_section(bench).tables
    assert [row[0] for row in table.rows] == ["0", "1"]
    assert [row[5:8] for row in table.rows] == [["128", "2", "0"], ["128", "2", "0"]]  # batch, threads, replicate
    assert [row[8] for row in table.rows] == ["100, 110, 120", "90, 95, 97"]


def test_a_process_on_synthetic_data_is_marked_in_every_window_and_in_the_claims():
    from fwbench.config import compose_config
    from fwbench.reporting.build import synthetic_note, windows_section

    bench = bench_rows({("tf", "graph"): [[100, 110]], ("torch", "eager"): [[90, 95]]})
    bench["synthetic"] = bench["framework"] == "torch"
    (table,) = windows_section(bench).tables
    assert [row[2] for row in table.rows] == ["convnet", "convnet" + SYNTHETIC_MARK]

    cfg = compose_config(PROJECT_ROOT / "config", ["experiment=default"])
    (note,) = synthetic_note(cfg, ["linear", "resnet18", "transformer"])
    assert note.startswith("Conditions on resnet18, transformer were measured on synthetic data")
    assert synthetic_note(cfg, ["linear", "convnet"]) == []


def report_sections(tmp_path, bench):
    """The sections build_report would write for these bench rows (controls, warning and all)."""
    from fwbench.claims import Margins, evaluate_controls
    from fwbench.reporting.build import controls_section, unsteady_warning

    controls = evaluate_controls(bench, [("tf", "convnet", "graph"), ("torch", "convnet", "eager")])
    return unsteady_warning(controls, bench), controls_section(controls, Margins())


def test_a_failing_aa_control_puts_a_warning_at_the_top_of_the_report(tmp_path):
    from fwbench.reporting.render import render_html, render_markdown

    # Even processes 30 % faster than odd ones, for the same code: the machine moved.
    unsteady = bench_rows({("tf", "graph"): [[130, 131], [100, 101], [131, 130], [101, 100]],
                           ("torch", "eager"): [[100, 100], [100, 101], [101, 100], [100, 100]]})
    warning, controls = report_sections(tmp_path, unsteady)
    assert warning is not None
    text = warning.paragraphs[0]
    assert "too unsteady" in warning.title and "tf:graph even vs odd replicates on convnet" in text
    # The 8 processes' own account of the machine: none busy (1 % others each), no steal.
    assert "over 5 % of the machine in 0 of 8 bench processes (at most 1.0 %)" in text
    assert "steal time, which no process here owns and an idle machine does not remove, at most 0.0 %" in text
    html = render_html("t", [warning, controls])
    assert html.index("too unsteady") < html.index("A/A controls")
    assert "class='warning'" in html
    assert "**Warning: this run's machine was too unsteady" in render_markdown("t", [warning, controls], tmp_path)


def test_steady_controls_put_no_warning_in_the_report(tmp_path):
    steady = bench_rows({("tf", "graph"): [[100, 101], [100, 100], [101, 100], [100, 100]],
                         ("torch", "eager"): [[100, 100], [100, 101], [101, 100], [100, 100]]})
    warning, controls = report_sections(tmp_path, steady)
    assert warning is None
    assert {row[-1] for row in controls.tables[0].rows} <= {"no meaningful difference", "inconclusive"}


def test_arms_benched_but_not_trained_are_named_where_their_rows_are_missing():
    """default benches tf_native and jax without training them: the accuracy and export tables say so."""
    from fwbench.reporting.build import export_section, untrained_note

    assert untrained_note([]) == []
    (note,) = untrained_note(["tf_native", "jax"])
    assert note.startswith("Benched here but not trained: TensorFlow (native), JAX (Flax)")
    assert note in export_section(None, ["mlp"], ["tf_native", "jax"]).paragraphs


def machine_rows(bench: pd.DataFrame, cpu_by_framework: dict[str, str]) -> pd.DataFrame:
    """The bench rows with the CPU each process recorded (2 cores, no GPU)."""
    return bench.assign(cpu_model=bench["framework"].map(cpu_by_framework), cpu_count=2, gpu_model="")


def test_provenance_names_every_machine_the_jobs_ran_on():
    from fwbench.reporting.build import machines_summary

    runs = [{"history": {"machine": {"cpu_model": cpu, "cpu_count": 2}}} for cpu in ("AMD EPYC", "AMD EPYC", "Xeon")]
    bench = machine_rows(bench_rows({("tf", "graph"): [[100], [101]], ("torch", "eager"): [[90]]}),
                         {"tf": "Xeon", "torch": "AMD EPYC"})
    assert machines_summary(runs, bench) == ("AMD EPYC, 2 cores (training runs 2, bench processes 1); "
                                             "Xeon, 2 cores (training runs 1, bench processes 2)")
    assert machines_summary(runs[:1], None) == "AMD EPYC, 2 cores (training runs 1)"


def test_bench_processes_on_different_machines_put_a_warning_first():
    from fwbench.reporting.build import mixed_machines_warning

    bench = bench_rows({("tf", "graph"): [[100], [101]], ("torch", "eager"): [[90]]})
    assert mixed_machines_warning(machine_rows(bench, {"tf": "Xeon", "torch": "Xeon"})) is None
    assert mixed_machines_warning(None) is None
    warning = mixed_machines_warning(machine_rows(bench, {"tf": "Xeon", "torch": "AMD EPYC"}))
    assert warning.css_class == "warning"
    assert "Xeon in 2 of 3 processes; AMD EPYC in 1 of 3 processes" in warning.paragraphs[0]
