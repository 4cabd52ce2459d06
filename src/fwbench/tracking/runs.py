"""The pipeline's MLflow runs: one parent run per generation of results, one child run per job.

The parent run is opened by the first rule (`start_pipeline_run`); every
train, evaluate and bench job logs a child run under it (`child_run`), with
its tags, config, metrics, artifacts, model and log. Metrics go in batches
(`MlflowClient.log_batch`), one retried write per call (fwbench.tracking.store).
MLflow is imported inside the functions that use it: the Snakefile imports this
module to name the parent-run file, and a parse should not pay for MLflow's import.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fwbench.errors import Interrupted
from fwbench.frameworks import registry as frameworks
from fwbench.runtime import git_state, package_versions, write_json_atomic
from fwbench.tracking.store import (
    SQLITE_PREFIX,
    TrackingError,
    experiment_name,
    one_line,
    open_store,
    tracking_enabled,
    with_retry,
)

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
CONFIG_ARTIFACT = "config.yaml"
LOG_ARTIFACT_DIR = "logs"
MODEL_NAME = "model"
# git runs here: the directory of this package's source, inside the repository when installed editable.

# Set by the rules (tracking_env): the Snakemake rule and the job's log file.
ENV_RULE = "FWBENCH_RULE"
ENV_LOG = "FWBENCH_LOG"
# Set by SLURM on cluster jobs; recorded so a run links to the scheduler's accounting.
ENV_SLURM_JOB_ID = "SLURM_JOB_ID"

# MLflow's limits per log_batch call.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100

# torch.export makes a batch dimension of size 1 static; more rows keep it dynamic.
INPUT_EXAMPLE_ROWS = 4
# What a logged model needs to load and predict, besides its framework (pinned to this run's versions).
MODEL_PACKAGES = ("mlflow", "numpy")

STATUS_FINISHED = "FINISHED"
STATUS_FAILED = "FAILED"
STATUS_KILLED = "KILLED"


# ---------------------------------------------------------------- names and locations


def parent_run_file(cfg: DictConfig) -> Path:
    """The parent-run file of an experiment and its dataset: the start_tracking rule's output."""
    return Path(cfg.paths.results) / cfg.experiment.name / cfg.experiment.dataset / PARENT_FILE


def tracking_env(rule_name: str) -> str:
    """Shell prefix a rule puts before its command: the job's child run learns its rule
    (a tag) and its log file (attached at the end). Snakemake fills in {log}."""
    return f"{ENV_RULE}={rule_name} {ENV_LOG}={{log:q}} "


# ---------------------------------------------------------------- the parent run


def common_tags(cfg: DictConfig) -> dict[str, str]:
    git = git_state()
    return {
        "experiment": str(cfg.experiment.name),
        "dataset": str(cfg.dataset.name),
        **git,
        "mlflow.source.git.commit": git["git_commit"],
        "host": socket.gethostname(),
    }


def start_pipeline_run(cfg: DictConfig, parent_file: Path | None = None) -> dict:
    """The start_tracking rule: create store and experiment, open the parent run, write its file.

    The parent run groups one generation of results: it is created when the
    parent-run file is missing and stays until the file is removed (removing
    it makes Snakemake rerun every job under a new parent; docs/tracking.md).
    It is a container, closed as FINISHED at once; each child carries its own status.
    """
    parent_file = Path(parent_file) if parent_file else parent_run_file(cfg)
    if not tracking_enabled(cfg):
        record = {"enabled": False, "tracking_uri": None, "experiment_id": None, "parent_run_id": None}
        write_json_atomic(parent_file, record)
        return record
    client, uri, experiment_id = open_store(cfg)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tags = {**common_tags(cfg), "role": "pipeline"}
    run = with_retry(client.create_run, experiment_id, run_name=f"pipeline {created}", tags=tags)
    run_id = run.info.run_id
    with_retry(client.log_text, run_id, OmegaConf.to_yaml(cfg, resolve=True), CONFIG_ARTIFACT)
    with_retry(client.set_terminated, run_id, STATUS_FINISHED)
    record = {
        "enabled": True,
        "tracking_uri": uri,
        "experiment_name": experiment_name(cfg),
        "experiment_id": experiment_id,
        "parent_run_id": run_id,
        "created": created,
    }
    write_json_atomic(parent_file, record)
    log.info("MLflow parent run %s in experiment %s (%s) -> %s", run_id, record["experiment_name"], uri, parent_file)
    return record


def read_parent(parent_file: Path) -> dict:
    return json.loads(Path(parent_file).read_text())


# ---------------------------------------------------------------- child runs


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, lists and scalars as text."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


class ChildRun:
    """One job's MLflow run. Every method is one batched, retried write."""

    def __init__(self, client, run_id: str, framework: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.framework = framework

    def set_tags(self, tags: Mapping[str, object]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for chunk in _chunks(items, MAX_TAGS_PER_BATCH):
            with_retry(self.client.log_batch, self.run_id, tags=chunk)

    def log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            with_retry(self.client.log_batch, self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Numbers at one step; None (e.g. a target never reached) is left out."""
        self._log_metric_rows([(key, value, step) for key, value in metrics.items()])

    def log_history(self, records: list[Mapping], step_key: str = "epoch") -> None:
        """A curve: every numeric field of each record at step = record[step_key]."""
        rows = []
        for record in records:
            step = int(record[step_key])
            rows += [(key, value, step) for key, value in record.items() if key != step_key]
        self._log_metric_rows(rows)

    def _log_metric_rows(self, rows: list[tuple[str, object, int]]) -> None:
        from mlflow.entities import Metric

        timestamp = _now_ms()
        metrics = [
            Metric(key, float(value), timestamp, step)
            for key, value, step in rows
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            with_retry(self.client.log_batch, self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        with_retry(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        with_retry(self.client.log_text, self.run_id, text, artifact_file)

    def log_model(self, model, input_example) -> str:
        """Log the job's model as an MLflow 3 logged model, in its framework's flavour; returns `models:/<id>`.

        Every flavour takes the same input: the preprocessed arrays as they are (NHWC float32 images,
        int32 token ids or (user, item) pairs; fwbench.frameworks.<name>.mlflow_model).
        """
        from mlflow.models import Model, infer_signature

        example = input_example[:INPUT_EXAMPLE_ROWS]
        versions = package_versions(self.framework)
        requirements = [f"{name}=={versions[name]}"
                        for name in (*MODEL_PACKAGES, *frameworks.spec(self.framework).packages) if name in versions]
        flavor, kwargs, output = frameworks.load(self.framework).mlflow_model(model, example)
        signature = infer_signature(example, output)
        with _tracking_uri(self.client.tracking_uri):
            info = with_retry(
                Model.log, artifact_path=None, name=MODEL_NAME, flavor=flavor, run_id=self.run_id,
                signature=signature, input_example=example, pip_requirements=requirements, **kwargs,
            )
        return f"models:/{info.model_id}"


class DisabledRun:
    """Stands in for ChildRun when tracking.enabled is false: same calls, nothing logged."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's model logging reads the process-wide tracking URI; point it at our store for a block."""
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _parent_or_new(cfg: DictConfig):
    """(client, experiment id, parent run id or None) from the parent-run file, or a fresh store by hand."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    parent_file = parent_run_file(cfg)
    if not parent_file.exists():
        log.warning("no parent-run file %s: logging a top-level MLflow run (a run by hand)", parent_file)
        client, _, experiment_id = open_store(cfg)
        return client, experiment_id, None
    parent = read_parent(parent_file)
    uri = parent.get("tracking_uri")
    stale = f"remove {parent_file} to start a new parent run"
    if not uri:
        raise TrackingError(f"parent-run file {parent_file} was written with tracking disabled: {stale}")
    if uri.startswith(SQLITE_PREFIX) and not Path(uri.removeprefix(SQLITE_PREFIX)).is_file():
        # Opening a missing SQLite file would create a schema here, racing the other jobs.
        raise TrackingError(f"tracking store {uri} named in {parent_file} does not exist: {stale}")
    client = MlflowClient(uri)
    try:
        with_retry(client.get_run, parent["parent_run_id"])
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise TrackingError(f"parent run {parent['parent_run_id']} named in {parent_file} is not in {uri}: {stale}") from None
    return client, parent["experiment_id"], parent["parent_run_id"]


def environment_tags() -> dict[str, str]:
    """What this process learns from its environment: the Snakemake rule, the job log, the SLURM job."""
    environment = {
        "snakemake_rule": os.environ.get(ENV_RULE),
        "job_log": os.environ.get(ENV_LOG),
        "slurm_job_id": os.environ.get(ENV_SLURM_JOB_ID),
    }
    return {key: value for key, value in environment.items() if value}


def _job_tags(cfg: DictConfig, job: str, tags: Mapping[str, object]) -> dict[str, str]:
    identity = {
        "job": job,
        "framework": cfg.framework.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        **common_tags(cfg),
    }
    merged = {**identity, **environment_tags(), **tags}
    return {key: str(value) for key, value in merged.items()}


def _run_name(cfg: DictConfig, job: str, tags: Mapping[str, object]) -> str:
    parts = [job, cfg.framework.name, cfg.model.name, f"seed{cfg.seed}"]
    if "mode" in tags:
        parts.append(str(tags["mode"]))
    return "/".join(parts)


def _start_system_metrics(run_id: str, uri: str, interval_s: float):
    """CPU, memory, disk, network and (where present) GPU every interval_s; best effort.

    A sampler that meets a store error stops with a warning: system metrics
    are a convenience, the job's own metrics are what must not be lost.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=uri)
    monitor.start()
    return monitor


def _log_job_log(run: ChildRun, path: str | None) -> None:
    """Attach the job's log file (as written so far) to the run."""
    if not path or not Path(path).is_file():
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    run.log_artifact(Path(path), LOG_ARTIFACT_DIR)


def _final_status(error: BaseException | None) -> str:
    if error is None:
        return STATUS_FINISHED
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return STATUS_KILLED
    return STATUS_FAILED


@contextmanager
def child_run(cfg: DictConfig, job: str, tags: Mapping[str, object] | None = None,
              system_metrics: bool = True) -> Iterator[ChildRun]:
    """The MLflow run of one pipeline job, a child of the pipeline's parent run.

        with child_run(cfg, "train") as run:
            ...
            run.log_metrics({"test_accuracy": 0.87})
            result["mlflow_run_id"] = run.run_id   # into the job's result file
            run.log_artifact(result_path)

    Records the job's tags, the resolved config as params and as config.yaml,
    system metrics while the block runs (unless `system_metrics` is false:
    a run logged after its job, by another process), and the job log at the
    end. `tags` win over what the environment says (environment_tags), so a
    run logged later can carry its job's rule and log. The run ends FINISHED,
    FAILED when the block raises, or KILLED on an interruption.
    """
    tags = dict(tags or {})
    if not tracking_enabled(cfg):
        yield DisabledRun()
        return
    client, experiment_id, parent_run_id = _parent_or_new(cfg)
    run_tags = _job_tags(cfg, job, tags)
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    created = with_retry(client.create_run, experiment_id, run_name=_run_name(cfg, job, tags), tags=run_tags)
    run = ChildRun(client, created.info.run_id, cfg.framework.name)
    log.info("MLflow run %s (%s) under parent %s", run.run_id, _run_name(cfg, job, tags), parent_run_id)
    monitor = None
    error = None
    try:
        run.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), CONFIG_ARTIFACT)
        if system_metrics:
            monitor = _start_system_metrics(run.run_id, client.tracking_uri, cfg.tracking.system_metrics_interval_s)
        yield run
    except BaseException as raised:
        error = raised
        raise
    finally:
        _close_run(run, monitor, run_tags.get("job_log"), _final_status(error), failing=error is not None)


def find_child_run(cfg: DictConfig, tag: str, value: str) -> str | None:
    """The id of a FINISHED child run of the parent whose `tag` is `value`, or None.

    A run logged after its job (the bench jobs' runs, logged by bench_table)
    is looked up first, so logging again does not duplicate it.
    """
    if not tracking_enabled(cfg):
        return None
    client, experiment_id, parent_run_id = _parent_or_new(cfg)
    conditions = [f"tags.`{tag}` = '{value}'", f"attributes.status = '{STATUS_FINISHED}'"]
    if parent_run_id:
        conditions.append(f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    found = with_retry(client.search_runs, [experiment_id], filter_string=" and ".join(conditions), max_results=1)
    return found[0].info.run_id if found else None


def _close_run(run: ChildRun, monitor, job_log: str | None, status: str, failing: bool) -> None:
    """Stop the sampler, attach the log, set the status. On a failing job a tracking
    error here is only logged, so the job's own error is the one that surfaces."""
    if monitor is not None:
        monitor.finish()
    try:
        _log_job_log(run, job_log)
        with_retry(run.client.set_terminated, run.run_id, status)
    except Exception as error:
        if not failing:
            raise
        log.warning("could not close MLflow run %s as %s: %s", run.run_id, status, one_line(error))
