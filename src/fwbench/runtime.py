"""Process-wide settings both frameworks get the same way: threads, seeds, determinism,
and a record of the machine and packages a result came from."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

FRAMEWORK_PACKAGES = {"tf": ("tensorflow", "tensorflow-cpu", "keras"), "torch": ("torch",)}
COMMON_PACKAGES = ("numpy", "hydra-core", "snakemake", "mlflow", "pandas")


def configure_framework(framework: str, threads: int, seed: int) -> None:
    """Set intra- and inter-op threads to the job's threads, seed every RNG, ask for determinism.

    Must run before the framework executes its first op: TensorFlow fixes its
    thread pools at start-up.
    """
    if framework == "tf":
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    elif framework == "torch":
        import numpy as np
        import torch

        torch.set_num_threads(threads)
        # Fixed once per process; a second call raises, which tests running
        # several trainings in one process would hit.
        if torch.get_num_interop_threads() != threads:
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:
                pass
        torch.manual_seed(seed)
        np.random.seed(seed)
        torch.use_deterministic_algorithms(True)
    else:
        raise ValueError(f"unknown framework {framework!r}: accepted are tf, torch")


def applied_threads(framework: str) -> dict[str, int]:
    """The thread counts the framework reports back, recorded so a result proves them."""
    if framework == "tf":
        import tensorflow as tf

        return {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    import torch

    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def package_versions(framework: str | None = None) -> dict[str, str]:
    names = list(COMMON_PACKAGES)
    if framework:
        names += FRAMEWORK_PACKAGES[framework]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON under a temporary name and rename, so a killed job leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
        temp_name = handle.name
    os.replace(temp_name, path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_package_path(src_dir: Path) -> None:
    """Put the project's src/ first on PYTHONPATH for every job this process starts."""
    current = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if str(src_dir) not in current:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src_dir), *current])
