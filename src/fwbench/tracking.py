"""MLflow tracking for the pipeline: one store, one experiment per (experiment, dataset),
one parent run per generation of results, one child run per train/evaluate/bench job.

The pipeline's own files stay the source of the report; MLflow mirrors the same
numbers so people can browse, filter and compare runs, and every result file
carries the id of the MLflow run that produced it.

Concurrency is designed, not hoped for. The default store is SQLite, which many
parallel Snakemake jobs write at once, so:
- the store (schema, WAL journal) and the experiment are created once, by the
  first rule (`start_tracking`, `start_pipeline_run` here), never by the jobs;
- every MLflow call a job makes goes through `with_retry`, which retries
  transient store errors ("database is locked", an unavailable server) with
  exponential backoff and jitter, and otherwise fails the job loudly: a metric
  is either in the store or the job failed, never silently dropped;
- metrics go in batches (`MlflowClient.log_batch`), one write per call.

MLflow is imported inside the functions that use it: the Snakefile imports this
module to name the parent-run file, and a parse should not pay for MLflow's import.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from omegaconf import DictConfig, OmegaConf

from fwbench.errors import FwbenchError
from fwbench.runtime import FRAMEWORK_PACKAGES, package_versions, write_json_atomic

log = logging.getLogger(__name__)

# Files and names.
PARENT_FILE = "mlflow_parent.json"
DB_FILE = "mlflow.db"
ARTIFACT_DIR = "artifacts"
EXPERIMENT_PREFIX = "fwbench"
CONFIG_ARTIFACT = "config.yaml"
LOG_ARTIFACT_DIR = "logs"
MODEL_NAME = "model"
SQLITE_PREFIX = "sqlite:///"
REPO_DIR = Path(__file__).resolve().parents[2]  # src/fwbench/tracking.py -> the repository

# Set by the rules (tracking_env): the Snakemake rule and the job's log file.
ENV_RULE = "FWBENCH_RULE"
ENV_LOG = "FWBENCH_LOG"
# Set by SLURM on cluster jobs; recorded so a run links to the scheduler's accounting.
ENV_SLURM_JOB_ID = "SLURM_JOB_ID"

# Retries of transient store errors. MLflow's SQLite sessions already wait up to
# 20 s on a lock (PRAGMA busy_timeout); these retries cover what outlasts that.
RETRY_ATTEMPTS = 6
RETRY_FIRST_WAIT_S = 0.5
RETRY_MAX_WAIT_S = 10.0
# Up to +50 % random extra wait, so parallel jobs that failed together do not retry together.
RETRY_JITTER = 0.5
TRANSIENT_ERROR_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED")
TRANSIENT_SQLITE_WORDS = ("locked", "busy")

# The start-up probe of the store: no retries and a short timeout, so an
# unreachable server fails the first rule within seconds.
PROBE_TIMEOUT_S = 10
MAX_ERROR_CHARS = 240
ERRNO_PATTERN = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")

# Filesystems (from /proc/mounts) shared between hosts, where an SQLite store is unsafe.
NETWORK_FILESYSTEMS = (
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "afs",
)

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


class TrackingError(FwbenchError):
    """The tracking store is unreachable or inconsistent with the pipeline's parent-run file."""


# ---------------------------------------------------------------- names and locations


def parent_run_file(cfg: DictConfig) -> Path:
    """The parent-run file of an experiment and dataset: the start_tracking rule's output."""
    return Path(cfg.paths.results) / cfg.experiment.name / cfg.dataset.name / PARENT_FILE


def experiment_name(cfg: DictConfig) -> str:
    return f"{EXPERIMENT_PREFIX}/{cfg.experiment.name}/{cfg.dataset.name}"


def embedded_store(mlflow_dir: Path) -> tuple[str, Path]:
    """The default store: SQLite and a local artifact directory under paths.mlflow, no server."""
    mlflow_dir = Path(mlflow_dir).resolve()
    return f"{SQLITE_PREFIX}{mlflow_dir / DB_FILE}", mlflow_dir / ARTIFACT_DIR


def resolve_store(cfg: DictConfig) -> tuple[str, Path | None]:
    """(tracking URI, local artifact root or None when a server decides).

    Precedence: tracking.uri (explicit, on the command line or in an experiment),
    then MLFLOW_TRACKING_URI (the environment), then the embedded store.
    """
    uri = cfg.tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return embedded_store(Path(cfg.paths.mlflow))
    uri = str(uri)
    if uri.startswith(SQLITE_PREFIX):
        # A relative SQLite path would mean something else in a job with another working directory.
        db_path = Path(uri.removeprefix(SQLITE_PREFIX)).resolve()
        return f"{SQLITE_PREFIX}{db_path}", db_path.parent / ARTIFACT_DIR
    return uri, None


def tracking_env(rule_name: str) -> str:
    """Shell prefix a rule puts before its command: the job's child run learns its rule
    (a tag) and its log file (attached at the end). Snakemake fills in {log}."""
    return f"{ENV_RULE}={rule_name} {ENV_LOG}={{log:q}} "


def check_tracking_config(cfg: DictConfig) -> None:
    interval = cfg.tracking.system_metrics_interval_s
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        raise TrackingError(
            f"tracking.system_metrics_interval_s={interval!r} is invalid: accepted is a number of seconds > 0"
        )


def tracking_enabled(cfg: DictConfig) -> bool:
    return bool(cfg.tracking.get("enabled", True))


# ---------------------------------------------------------------- retries


def one_line(error: BaseException) -> str:
    """An exception as one bounded line, for logs and error messages."""
    text = " ".join(str(error).split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return f"{type(error).__name__}: {text}"


def short_reason(error: BaseException) -> str:
    """The OS-level cause when there is one ("[Errno 111] Connection refused"), else the error's line."""
    match = ERRNO_PATTERN.search(str(error))
    return match.group(0) if match else one_line(error)


def is_transient(error: BaseException) -> bool:
    """Whether an error, or one it was raised from, is a store being busy rather than a bug."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "error_code", None) in TRANSIENT_ERROR_CODES:
            return True
        if type(error).__name__ == "OperationalError":  # sqlite3 and SQLAlchemy alike
            message = str(error).lower()
            if any(word in message for word in TRANSIENT_SQLITE_WORDS):
                return True
        error = error.__cause__ or error.__context__
    return False


def with_retry(call, *args, sleep=time.sleep, **kwargs):
    """`call(*args, **kwargs)`, retried with exponential backoff while the store is busy.

    Every MLflow write a job makes goes through here. A transient error that
    outlasts the retries is raised: the job fails rather than losing data.
    """
    wait = RETRY_FIRST_WAIT_S
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if attempt == RETRY_ATTEMPTS or not is_transient(error):
                raise
            pause = wait * (1 + random.uniform(0, RETRY_JITTER))
            log.warning(
                "MLflow store busy in %s (%s): retry %d of %d in %.1f s",
                getattr(call, "__name__", "call"), one_line(error), attempt, RETRY_ATTEMPTS - 1, pause,
            )
            sleep(pause)
            wait = min(wait * 2, RETRY_MAX_WAIT_S)


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block (MLflow reads its HTTP settings there)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- the store and the parent run


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding path, from /proc/mounts ("" where unknown)."""
    path = Path(path).resolve()
    best, fstype = None, ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = Path(fields[1].replace("\\040", " "))
        if (mount == path or mount in path.parents) and (best is None or len(mount.parts) > len(best.parts)):
            best, fstype = mount, fields[2]
    return fstype


def check_local_disk(db_path: Path) -> None:
    """SQLite's locks are unreliable and its WAL unusable on network filesystems, where
    cluster jobs on several nodes would share the file: refuse, and name the way out."""
    fstype = filesystem_type(db_path.parent)
    if fstype in NETWORK_FILESYSTEMS:
        raise TrackingError(
            f"embedded SQLite store {db_path} is on a network filesystem ({fstype}): accepted is a local "
            "disk (paths.mlflow=...) or a tracking server (tracking.uri=http://..., docs/tracking.md)"
        )


def create_sqlite_store(uri: str, artifact_root: Path) -> None:
    """Create (or open) the SQLite schema and default experiment, and switch the journal to WAL.

    Runs in the first rule only, so no two jobs ever race to create the schema.
    WAL lets readers (the UI, system-metrics monitors) proceed while a job
    writes; the setting is stored in the database file and holds for every
    later connection.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db_path = Path(uri.removeprefix(SQLITE_PREFIX))
    check_local_disk(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    artifact_root.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(uri, artifact_root.as_uri())
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def check_reachable(uri: str) -> None:
    """Fail at once, with one line naming the URI, when the store does not answer."""
    from mlflow import MlflowClient

    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S)}
    with _environment(**settings):
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # noqa: BLE001 - any failure here means "not usable"
            raise TrackingError(
                f"tracking store {uri} is unreachable ({short_reason(error)}): accepted is a reachable "
                "MLflow tracking server in tracking.uri or MLFLOW_TRACKING_URI, or neither set for "
                "the embedded store under paths.mlflow"
            ) from None


def ensure_experiment(client, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, creating it (artifacts under artifact_root/<name>) when missing."""
    from mlflow.exceptions import MlflowException

    experiment = with_retry(client.get_experiment_by_name, name)
    if experiment is None:
        location = (artifact_root / name).as_uri() if artifact_root is not None else None
        try:
            return with_retry(client.create_experiment, name, artifact_location=location)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":  # created meanwhile by a run by hand
                raise
            experiment = with_retry(client.get_experiment_by_name, name)
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"MLflow experiment '{name}' is deleted in {client.tracking_uri}: accepted is an active "
            "experiment; restore it in the UI or remove it for good with `mlflow gc`"
        )
    return experiment.experiment_id


def open_store(cfg: DictConfig):
    """(client, tracking URI, experiment id): the store created if it is the embedded one, probed, ready."""
    from mlflow import MlflowClient

    check_tracking_config(cfg)
    uri, artifact_root = resolve_store(cfg)
    if artifact_root is not None:
        create_sqlite_store(uri, artifact_root)
    check_reachable(uri)
    client = MlflowClient(uri)
    return client, uri, ensure_experiment(client, experiment_name(cfg), artifact_root)


def git_state(repo: Path = REPO_DIR) -> dict[str, str]:
    """The commit the code came from, and whether the tree had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


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
        """Log a Keras or torch model as an MLflow 3 logged model; returns its `models:/<id>` URI.

        Both flavors take the same input: NHWC float32 arrays, as the
        preprocessed data. A torch model is wrapped to permute to NCHW and
        exported as a `pt2` graph, which loads without this package.
        """
        import mlflow
        from mlflow.models import Model, infer_signature

        example = input_example[:INPUT_EXAMPLE_ROWS]
        framework = self.framework or ("torch" if type(model).__module__.startswith("torch") else "tf")
        versions = package_versions(framework)
        requirements = [f"{name}=={versions[name]}" for name in (*MODEL_PACKAGES, *FRAMEWORK_PACKAGES[framework])
                        if name in versions]
        if framework == "tf":
            flavor, kwargs = keras_flavor(), {"model": model}
            output = model.predict(example, verbose=0)
        else:
            wrapped = nhwc_torch_module(model)
            flavor, kwargs = mlflow.pytorch, {"pytorch_model": wrapped, "serialization_format": "pt2"}
            output = wrapped(_torch_tensor(example)).detach().numpy()
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


def keras_flavor():
    """mlflow.keras, creating the model directory first: its save_model writes the input
    example before it makes the directory (mlflow/mlflow#16183, still open in 3.17)."""
    import mlflow.keras

    def save_model(path, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)

    return SimpleNamespace(__name__=mlflow.keras.__name__, save_model=save_model)


def nhwc_torch_module(model):
    """A CPU copy of a torch model that takes NHWC input like the Keras one, in eval mode."""
    import copy

    import torch

    class NhwcInput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.permute(0, 3, 1, 2))

    return NhwcInput(copy.deepcopy(model).cpu()).eval()


def _torch_tensor(array):
    import torch

    return torch.from_numpy(array)


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
    if isinstance(error, KeyboardInterrupt) or type(error).__name__ == "Interrupted":
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
    check_tracking_config(cfg)
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
