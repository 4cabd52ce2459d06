"""MLflow tracking: the store, the parent run, child runs, retries, models, and the
pipeline under parallel load.

Every test keeps its store in tmp_path (paths.mlflow redirected). The heavy ones
(many parallel jobs, logged models of both frameworks, the smoke pipeline) are slow.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import CONFIG_DIR, project_env, redirected_paths, run_snakemake
from fwbench.frameworks.registry import FRAMEWORKS
from fwbench.tracking import runs, store
from fwbench.bench.grid import bench_schedule
from fwbench.bench.outputs import results_path as bench_results_path
from fwbench.config import compose_config, experiment_grid, run_dir
from fwbench.tracking.runs import child_run, flatten, parent_run_file, read_parent, start_pipeline_run
from fwbench.tracking.store import TrackingError, resolve_store, with_retry

UNREACHABLE_URI = "http://127.0.0.1:9"  # the discard port: nothing listens there
SUBPROCESS_TIMEOUT_S = 600  # generous: the point is that the run ends, not how fast
ERROR_PREFIX = "fwbench: error:"

# The parallel-load test: jobs x steps per job x rounds (one snakemake invocation each).
PARALLEL_JOBS = 8
STEPS_PER_JOB = 300
ROUNDS = 3
STRESS_METRICS = ("loss", "index")
RETRY_MESSAGE = "MLflow store busy"  # what store.with_retry logs before a retry

# Holding SQLite's write lock longer than MLflow's 20 s busy timeout forces a retry.
MLFLOW_BUSY_TIMEOUT_S = 20
LOCK_HELD_S = MLFLOW_BUSY_TIMEOUT_S + 3

EXAMPLE_ROWS = 16
MODEL_NAME = "lenet"


def tmp_cfg(base: Path, *overrides: str):
    return compose_config(CONFIG_DIR, ["experiment=smoke", *redirected_paths(base), *overrides])


def mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def transient_error(message: str = "database is locked"):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    return MlflowException(message, error_code=TEMPORARILY_UNAVAILABLE)


# ---------------------------------------------------------------- pure functions


def test_store_defaults_to_sqlite_under_paths_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, artifacts = resolve_store(tmp_cfg(tmp_path))
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert artifacts == tmp_path / "mlruns" / "artifacts"


def test_environment_then_config_point_at_a_server(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_store(tmp_cfg(tmp_path)) == ("http://tracking.example:5000", None)
    explicit = tmp_cfg(tmp_path, "tracking.uri=http://other.example:5000")
    assert resolve_store(explicit) == ("http://other.example:5000", None)


def test_flatten_gives_dotted_params():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}


def test_retry_outlasts_a_locked_database_and_backs_off():
    calls, pauses = [], []

    def flaky(value):
        calls.append(value)
        if len(calls) < 3:
            raise transient_error()
        return value

    assert with_retry(flaky, "ok", sleep=pauses.append) == "ok"
    assert len(calls) == 3
    assert len(pauses) == 2 and pauses[1] > pauses[0]


def test_retry_raises_a_lasting_or_permanent_error():
    def always_locked():
        raise transient_error()

    with pytest.raises(Exception, match="database is locked"):
        with_retry(always_locked, sleep=lambda s: None)

    calls = []

    def broken():
        calls.append(1)
        raise ValueError("not a store problem")

    with pytest.raises(ValueError):
        with_retry(broken, sleep=lambda s: None)
    assert len(calls) == 1


# ---------------------------------------------------------------- parent and child runs


def test_child_runs_sit_under_the_parent_with_tags_params_and_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(runs.ENV_RULE, "train")
    cfg = tmp_cfg(tmp_path, "framework=torch", "model=mlp", "seed=2")
    parent = start_pipeline_run(cfg)
    assert read_parent(parent_run_file(cfg)) == parent

    history = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.75}]
    with child_run(cfg, "train") as run:
        run.log_history(history)
        run.log_metrics({"wall_time_s": 3.0, "unreached": None})

    client = mlflow_client(parent["tracking_uri"])
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.info.experiment_id == parent["experiment_id"]
    tags = logged.data.tags
    assert tags["mlflow.parentRunId"] == parent["parent_run_id"]
    expected = {"job": "train", "framework": "torch", "model": "mlp", "seed": "2",
                "dataset": "digits", "experiment": "smoke", "snakemake_rule": "train"}
    assert {key: tags[key] for key in expected} == expected
    assert tags["git_commit"]
    assert logged.data.params["trainer.batch_size"] == str(cfg.trainer.batch_size)
    steps = [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val_accuracy")]
    assert sorted(steps) == [(1, 0.5), (2, 0.75)]
    assert "unreached" not in logged.data.metrics
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.run_id)]


def test_a_failing_job_marks_its_run_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_cfg(tmp_path)
    parent = start_pipeline_run(cfg)
    with pytest.raises(RuntimeError, match="boom"):
        with child_run(cfg, "evaluate") as run:
            raise RuntimeError("boom")
    assert mlflow_client(parent["tracking_uri"]).get_run(run.run_id).info.status == "FAILED"


def test_a_parent_file_whose_store_is_gone_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_cfg(tmp_path)
    start_pipeline_run(cfg)
    (tmp_path / "mlruns" / "mlflow.db").unlink()
    with pytest.raises(TrackingError) as error:
        with child_run(cfg, "train"):
            pass
    message = str(error.value)
    assert "\n" not in message and str(parent_run_file(cfg)) in message
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no job creates a store


def test_the_embedded_store_refuses_a_network_filesystem(tmp_path, monkeypatch):
    assert store.filesystem_type(tmp_path) not in store.NETWORK_FILESYSTEMS
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(store, "filesystem_type", lambda path: "nfs4")
    with pytest.raises(TrackingError, match="network filesystem \\(nfs4\\)") as error:
        start_pipeline_run(tmp_cfg(tmp_path))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


def test_disabled_tracking_logs_nothing(tmp_path):
    cfg = tmp_cfg(tmp_path, "tracking.enabled=false")
    start_pipeline_run(cfg)
    with child_run(cfg, "train") as run:
        run.log_metrics({"x": 1.0})
    assert run.run_id is None
    assert not (tmp_path / "mlruns").exists()


def test_unreachable_tracking_uri_fails_the_first_rule_in_one_line(tmp_path):
    overrides = " ".join([*redirected_paths(tmp_path), f"tracking.uri={UNREACHABLE_URI}"])
    result = run_snakemake("--cores", "2", "--config", "experiment=smoke", f"overrides={overrides}",
                           cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_S)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, result.stderr[-3000:]
    assert UNREACHABLE_URI in errors[0]
    results = tmp_path / "results"
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))


@pytest.mark.slow
def test_a_lock_outlasting_sqlites_busy_timeout_is_retried_without_losing_metrics(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    caplog.set_level(logging.WARNING, logger=store.__name__)
    cfg = tmp_cfg(tmp_path)
    start_pipeline_run(cfg)
    locked = threading.Event()

    def hold_write_lock():
        connection = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(LOCK_HELD_S)
        connection.execute("COMMIT")
        connection.close()

    with child_run(cfg, "train") as run:
        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        locked.wait()
        run.log_history([{"epoch": epoch, "val_loss": 1.0 / epoch} for epoch in range(1, 6)])
        holder.join()
    assert RETRY_MESSAGE in caplog.text  # the lock did outlast MLflow's own wait
    client = mlflow_client(read_parent(parent_run_file(cfg))["tracking_uri"])
    assert [m.step for m in client.get_metric_history(run.run_id, "val_loss")] == [1, 2, 3, 4, 5]
    assert client.get_run(run.run_id).info.status == "FINISHED"


# ---------------------------------------------------------------- parallel load

STRESS_JOB = '''\
"""One stress job: start the parent run, or log a metric at every step as a child run."""
import sys
from fwbench.config import compose_config
from fwbench.tracking.runs import child_run, start_pipeline_run

config_dir, base, round_name, job, steps = sys.argv[1:6]
overrides = ["experiment=smoke", f"paths.results={base}/{round_name}", f"paths.mlflow={base}/mlruns"]
if job == "start":
    start_pipeline_run(compose_config(config_dir, overrides))
else:
    cfg = compose_config(config_dir, [*overrides, f"seed={job}"])
    with child_run(cfg, "stress", tags={"round": round_name}) as run:
        for step in range(int(steps)):
            run.log_metrics({"loss": 1.0 / (step + 1), "index": float(job)}, step=step)
'''

STRESS_SNAKEFILE = '''\
PARENT = "{{round}}/smoke/digits/mlflow_parent.json"
JOBS = range({jobs})


rule all:
    input:
        expand("{{round}}/job{{i}}.done", round=config["round"], i=JOBS),


rule start:
    output:
        PARENT,
    shell:
        "python stress_job.py {config_dir} {base} {{wildcards.round}} start 0"


rule job:
    input:
        PARENT,
    output:
        "{{round}}/job{{i}}.done",
    shell:
        "python stress_job.py {config_dir} {base} {{wildcards.round}} {{wildcards.i}} {steps} && touch {{output}}"
'''


def expected_stress_history(key: str, job: int) -> list[tuple[int, float]]:
    """What STRESS_JOB logs: every step, with values that tell the jobs apart."""
    if key == "loss":
        return [(step, 1.0 / (step + 1)) for step in range(STEPS_PER_JOB)]
    return [(step, float(job)) for step in range(STEPS_PER_JOB)]


@pytest.mark.slow
def test_parallel_jobs_lose_no_run_and_no_metric_step(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "stress_job.py").write_text(STRESS_JOB)
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(STRESS_SNAKEFILE.format(jobs=PARALLEL_JOBS, config_dir=CONFIG_DIR, base=tmp_path,
                                                 steps=STEPS_PER_JOB))
    rounds = [f"round{r}" for r in range(ROUNDS)]
    retries = 0
    for round_name in rounds:
        result = run_snakemake("--snakefile", str(snakefile), "--cores", str(PARALLEL_JOBS),
                               "--config", f"round={round_name}", cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-5000:]
        retries += (result.stdout + result.stderr).count(RETRY_MESSAGE)

    parents = {r: json.loads((tmp_path / r / "smoke" / "digits" / "mlflow_parent.json").read_text()) for r in rounds}
    uri = parents[rounds[0]]["tracking_uri"]
    client = mlflow_client(uri)
    experiment_id = parents[rounds[0]]["experiment_id"]
    runs = client.search_runs([experiment_id], max_results=1000)
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    by_parent = {p["parent_run_id"]: [c for c in children if c.data.tags["mlflow.parentRunId"] == p["parent_run_id"]]
                 for p in parents.values()}
    statuses = {run.info.status for run in children}
    steps_complete = sum(
        sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        == expected_stress_history(key, int(run.data.tags["seed"]))
        for run in children for key in STRESS_METRICS
    )
    print(f"\nparallel tracking: {ROUNDS} rounds x {PARALLEL_JOBS} jobs x {STEPS_PER_JOB} steps: "
          f"{len(runs)} runs in store ({len(runs) - len(children)} parents, {len(children)} children), "
          f"statuses {sorted(statuses)}, {steps_complete}/{len(children) * len(STRESS_METRICS)} metric histories complete, "
          f"{retries} retried store calls")

    assert len({p["experiment_id"] for p in parents.values()}) == 1
    assert len(runs) == ROUNDS * (PARALLEL_JOBS + 1)
    assert all(len(kids) == PARALLEL_JOBS for kids in by_parent.values())
    for round_name, parent in parents.items():
        assert {c.data.tags["round"] for c in by_parent[parent["parent_run_id"]]} == {round_name}
        assert {c.data.tags["seed"] for c in by_parent[parent["parent_run_id"]]} == {str(i) for i in range(PARALLEL_JOBS)}
    assert statuses == {"FINISHED"}
    assert steps_complete == len(children) * len(STRESS_METRICS)


# ---------------------------------------------------------------- models

# Each framework in its own process, as in the pipeline: TensorFlow and torch.export
# in one process can crash it. The script prints one JSON line for the test to check.
MODEL_ROUNDTRIP = '''\
import json, sys
import numpy as np
from fwbench.config import compose_config
from fwbench.tracking.runs import child_run, start_pipeline_run

IMAGE_SHAPE, NUM_CLASSES = (28, 28, 1), 10  # what the builders are made for (the datasets' images)
config_dir, framework, model_name, rows, *overrides = sys.argv[1:]
cfg = compose_config(config_dir, [*overrides, f"framework={framework}", f"model={model_name}"])
parent = start_pipeline_run(cfg)
x = np.random.default_rng(0).normal(size=(int(rows), *IMAGE_SHAPE)).astype(np.float32)
from fwbench.frameworks import registry
adapter = registry.load(framework).Adapter(cfg.model, IMAGE_SHAPE, NUM_CLASSES, cfg.trainer)
before = adapter.predict_logits(x, len(x))
model = adapter.model
with child_run(cfg, "train") as run:
    model_uri = run.log_model(model, x)

import mlflow
mlflow.set_tracking_uri(parent["tracking_uri"])
loaded = mlflow.pyfunc.load_model(model_uri)
after = np.asarray(loaded.predict(x))
print(json.dumps({
    "model_uri": model_uri,
    "source_run_matches": mlflow.get_logged_model(model_uri.removeprefix("models:/")).source_run_id == run.run_id,
    "has_signature": loaded.metadata.signature is not None,
    "classes_before": before.argmax(axis=1).tolist(),
    "classes_after": after.argmax(axis=1).tolist(),
    "max_abs_logit_difference": float(np.abs(after - before).max()),
}))
'''
# Reloading must give the same network: logits equal to float32 rounding.
LOGIT_TOLERANCE = 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_a_logged_model_loads_back_and_predicts_the_same_classes(framework, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = subprocess.run(
        [sys.executable, "-c", MODEL_ROUNDTRIP, str(CONFIG_DIR), framework, MODEL_NAME, str(EXAMPLE_ROWS),
         "experiment=smoke", *redirected_paths(tmp_path)],
        cwd=tmp_path, env=project_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{framework}: {outcome['model_uri']} reloaded, max |logit difference| {outcome['max_abs_logit_difference']:.2e}")
    assert outcome["model_uri"].startswith("models:/")
    assert outcome["source_run_matches"] and outcome["has_signature"]
    assert len(outcome["classes_before"]) == EXAMPLE_ROWS
    assert outcome["classes_after"] == outcome["classes_before"]
    assert outcome["max_abs_logit_difference"] <= LOGIT_TOLERANCE


# ---------------------------------------------------------------- the smoke pipeline


def result_files(results: Path) -> list[tuple[Path, dict]]:
    """Every JSON result file that names an MLflow run (history, metrics, bench results)."""
    files = []
    for path in sorted(results.rglob("*.json")):
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and "mlflow_run_id" in payload:
            files.append((path, payload))
    return files


def job_targets(cfg) -> list[str]:
    """The smoke grid's metrics.json files (they pull in start_tracking, train and
    evaluate) and the bench table (every bench job). Named explicitly so the test
    does not depend on the report stage."""
    metrics = [str(run_dir(cfg, framework, model, seed) / "metrics.json") for framework, model, seed in experiment_grid(cfg)]
    return [*metrics, str(bench_results_path(cfg))]


def check_bench_runs(cfg, table, client, by_id: dict) -> None:
    """Each bench process's run is tagged as such and holds every window's numbers at step = window."""
    processes = table.groupby(["framework", "model", "mode", "batch_size", "threads", "replicate"], sort=False)
    assert sorted(processes.groups) == sorted((*job.variant, job.replicate) for job in bench_schedule(cfg))
    for (framework, model, mode, batch_size, threads, replicate), rows in processes:
        assert rows["mlflow_run_id"].nunique() == 1, (framework, model, mode, batch_size, threads, replicate)
        run = by_id[rows["mlflow_run_id"].iloc[0]]
        tags = run.data.tags
        assert (tags["job"], tags["framework"], tags["model"], tags["mode"]) == ("bench", framework, model, mode)
        assert (tags["snakemake_rule"], tags["replicate"]) == ("bench", str(replicate))
        # The setting, as tags and as the job's config params.
        assert (tags["batch_size"], tags["threads"]) == (str(batch_size), str(threads))
        assert (run.data.params["trainer.batch_size"], run.data.params["threads"]) == (str(batch_size), str(threads))
        for key in ("train_samples_per_s", "infer_latency_p50_ms", "peak_rss_train_mb"):
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert logged == list(zip(rows["window"], rows[key])), (framework, model, mode, key)
            assert run.data.metrics[f"{key}_mean"] == pytest.approx(rows[key].mean())


def check_runs_match_result_files(base: Path) -> None:
    """One FINISHED child run per job under the parent, holding the result files' numbers."""
    cfg = tmp_cfg(base)
    parent = read_parent(parent_run_file(cfg))
    client = mlflow_client(parent["tracking_uri"])
    children = client.search_runs(
        [parent["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{parent['parent_run_id']}'",
        max_results=1000,
    )
    by_id = {run.info.run_id: run for run in children}
    files = result_files(base / "results")
    bench_table = pd.read_csv(bench_results_path(cfg))
    bench_ids = set(bench_table["mlflow_run_id"])
    grid = experiment_grid(cfg)
    print(f"\nsmoke: {len(children)} child runs under parent {parent['parent_run_id']}, "
          f"{len(files)} result files naming a run")

    # One run per job: every result file and bench job names a distinct child; no child is left over.
    json_ids = {payload["mlflow_run_id"] for _, payload in files}
    assert len(files) == len(json_ids)
    assert len(json_ids) + len(bench_ids) == len(by_id)
    assert json_ids | bench_ids == set(by_id)
    assert {run.info.status for run in children} == {"FINISHED"}
    jobs = [(run.data.tags["job"], run.data.tags["framework"], run.data.tags["model"], int(run.data.tags["seed"]))
            for run in children]
    for job in ("train", "evaluate"):
        assert sorted(j[1:] for j in jobs if j[0] == job) == sorted(grid)

    for framework, model, seed in grid:
        directory = run_dir(cfg, framework, model, seed)
        history = json.loads((directory / "history.json").read_text())
        train_run = by_id[history["mlflow_run_id"]]
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            logged = sorted((m.step, m.value) for m in client.get_metric_history(train_run.info.run_id, key))
            assert logged == [(record["epoch"], record[key]) for record in history["history"]], key
        assert len(train_run.outputs.model_outputs) == 1
        assert train_run.data.tags["snakemake_rule"] == "train"
        metrics = json.loads((directory / "metrics.json").read_text())
        evaluate_run = by_id[metrics["mlflow_run_id"]]
        for key in ("test_accuracy", "test_loss"):
            assert evaluate_run.data.metrics[key] == metrics[key], key
        assert evaluate_run.data.tags["snakemake_rule"] == "evaluate"
        assert "logs" in [a.path for a in client.list_artifacts(evaluate_run.info.run_id)]
    check_bench_runs(cfg, bench_table, client, by_id)


@pytest.mark.slow
def test_smoke_pipeline_has_one_child_run_per_job_with_the_result_files_numbers(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = " ".join(redirected_paths(tmp_path))
    # Targets before --config, which takes every argument after it.
    result = run_snakemake(*job_targets(tmp_cfg(tmp_path)), "--cores", "2",
                           "--config", "experiment=smoke", f"overrides={overrides}",
                           cwd=tmp_path, timeout=SUBPROCESS_TIMEOUT_S * 3)
    assert result.returncode == 0, result.stderr[-5000:]
    check_runs_match_result_files(tmp_path)
