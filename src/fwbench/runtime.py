"""What every job records of where it ran (machine, packages, accelerator, scheduler), and atomic writes.

The framework's own settings (threads, seeds, determinism) and what it reads
back are in its module, fwbench.frameworks.<name>.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from fwbench.frameworks import registry as frameworks
from fwbench.units import BYTES_PER_MIB

# The package's own checkout: the code that ran, whatever the working directory.
PACKAGE_DIR = Path(__file__).resolve().parent

COMMON_PACKAGES = ("numpy", "hydra-core", "snakemake", "mlflow", "pandas")


def package_versions(framework: str | None = None) -> dict[str, str]:
    names = list(COMMON_PACKAGES)
    if framework:
        names += frameworks.spec(framework).packages
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


# ---------------------------------------------------------------- accelerators and precision
# Every speed result names the device, the driver, the libraries the framework
# was built with and the precision it ran at: numbers from two machines or two
# settings must never be read as one.

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
NVIDIA_SMI_TIMEOUT_S = 10


def nvidia_driver_version() -> str:
    """The NVIDIA kernel driver's version, or "" where there is none."""
    import subprocess

    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        text = ""
    for word in text.split():
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True,
        )
        return result.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def gpu_info(framework_module) -> dict[str, str]:
    """GPU model and driver, and the CUDA and cuDNN versions the framework was built with.

    Empty strings where there is no GPU or no CUDA build; the versions are the
    framework's own (its module's gpu_build), which is what ran.
    """
    build = framework_module.gpu_build()
    return {
        "gpu_model": build["gpu_model"],
        "gpu_driver": nvidia_driver_version() if build["gpu_model"] else "",
        "cuda_version": build["cuda_version"],
        "cudnn_version": build["cudnn_version"],
    }


# What SLURM tells a job about itself: job id, partition and the GPUs it was given
# (SLURM_JOB_GPUS in a batch script, SLURM_STEP_GPUS in an srun step, which is how
# Snakemake's SLURM plugin runs a rule); the frameworks see CUDA_VISIBLE_DEVICES.
SCHEDULER_VARIABLES = (
    "SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES",
)


def scheduler_info() -> dict[str, str]:
    """The scheduler variables set for this process; empty for a run outside SLURM."""
    return {name: os.environ[name] for name in SCHEDULER_VARIABLES if name in os.environ}


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name and rename, so a killed job leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False, newline="") as handle:
        handle.write(text)
        temp_name = handle.name
    os.replace(temp_name, path)


def write_json_atomic(path: Path, payload: object) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(BYTES_PER_MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_package_path(src_dir: Path) -> None:
    """Put the project's src/ first on PYTHONPATH for every job this process starts."""
    current = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if str(src_dir) not in current:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src_dir), *current])


def git_state(repo: Path = PACKAGE_DIR) -> dict[str, str]:
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


@contextmanager
def imports_refused(names: tuple[str, ...]):
    """Within the block, `import <name>` raises ImportError for each name not loaded yet.

    A None entry in sys.modules is Python's documented way to make an import
    fail; the entries are removed afterwards, so later imports work as usual.
    """
    refused = [name for name in names if name not in sys.modules]
    for name in refused:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in refused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
