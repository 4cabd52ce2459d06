"""The MLflow store: where it is, creating and probing it, and retrying its transient errors.

Every MLflow call a job makes goes through `with_retry`, which retries
transient store errors ("database is locked", an unavailable server) with
exponential backoff and jitter, and otherwise fails the job loudly: a metric
is either in the store or the job failed, never silently dropped. The store
(schema, WAL journal) and the experiment are created once, by the first rule
(`open_store` from fwbench.tracking.runs.start_pipeline_run), never by the jobs.
MLflow is imported inside the functions that use it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from fwbench.errors import FwbenchError

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "artifacts"
EXPERIMENT_PREFIX = "fwbench"
SQLITE_PREFIX = "sqlite:///"

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


class TrackingError(FwbenchError):
    """The tracking store is unreachable or inconsistent with the pipeline's parent-run file."""


def experiment_name(cfg: DictConfig) -> str:
    return f"{EXPERIMENT_PREFIX}/{cfg.experiment.name}/{cfg.experiment.dataset}"


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


# ---------------------------------------------------------------- the store


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

    uri, artifact_root = resolve_store(cfg)
    if artifact_root is not None:
        create_sqlite_store(uri, artifact_root)
    check_reachable(uri)
    client = MlflowClient(uri)
    return client, uri, ensure_experiment(client, experiment_name(cfg), artifact_root)
