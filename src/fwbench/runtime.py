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


def configure_framework(framework: str, threads: int, seed: int, tf32: bool = False,
                        deterministic: bool = True) -> None:
    """Set intra- and inter-op threads to the job's threads, seed every RNG, turn framework
    determinism on or off (`deterministic`), and set TF32 on matmul and convolution explicitly (`tf32`).

    Must run before the framework executes its first op: TensorFlow fixes its
    thread pools at start-up. TF32 is set in both frameworks because their
    defaults differ (TensorFlow allows it, torch allows it for convolutions only).
    """
    if framework == "tf":
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        enable_tf_memory_growth()
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        keras.utils.set_random_seed(seed)
        set_tf_determinism(deterministic)
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
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(seed)
        np.random.seed(seed)
        # Only on a change: the call imports torch's compiler stack (about 2.6 s on 2 CPU
        # cores), which an eager bench job that keeps the default (off) does not need.
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)
    else:
        raise ValueError(f"unknown framework {framework!r}: accepted are tf, torch")


def set_tf_determinism(enabled: bool) -> None:
    """TensorFlow op determinism on or off (Keras never XLA-compiles while it is on)."""
    # TensorFlow has a public switch on; the switch off is only in this module.
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


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


# ---------------------------------------------------------------- accelerators and precision
# Every speed result names the device, the driver, the libraries the framework
# was built with and the precision it ran at: numbers from two machines or two
# settings must never be read as one.

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
NVIDIA_SMI_TIMEOUT_S = 10


def enable_tf_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as it needs it instead of reserving it all.

    Without it TF grabs nearly the whole GPU at start-up and its peak allocation
    says nothing about the model. Must run before TF initializes the GPU.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


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


def gpu_info(framework: str) -> dict[str, str]:
    """GPU model and driver, and the CUDA and cuDNN versions the framework was built with.

    Empty strings where there is no GPU or no CUDA build; the versions are the
    framework's own (torch.version.cuda, TF's build info), which is what ran.
    """
    if framework == "tf":
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        gpus = tf.config.list_physical_devices("GPU")
        model = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "") if gpus else ""
        cuda, cudnn = build.get("cuda_version", ""), build.get("cudnn_version", "")
    elif framework == "torch":
        import torch

        model = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
        cuda = torch.version.cuda or ""
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    else:
        raise ValueError(f"unknown framework {framework!r}: accepted are tf, torch")
    return {
        "gpu_model": str(model),
        "gpu_driver": nvidia_driver_version() if model else "",
        "cuda_version": str(cuda or ""),
        "cudnn_version": str(cudnn or ""),
    }


def framework_version(framework: str) -> str:
    if framework == "tf":
        import keras
        import tensorflow as tf

        return f"tensorflow {tf.__version__}, keras {keras.__version__}"
    import torch

    return f"torch {torch.__version__}"


def precision_flags(framework: str) -> dict[str, object]:
    """The precision settings in force, read back from the framework (not from the config)."""
    if framework == "tf":
        import keras
        import tensorflow as tf

        tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
        # One switch covers matmul and convolution in TensorFlow.
        return {"tf32_matmul": tf32, "tf32_conv": tf32, "mixed_precision": keras.mixed_precision.global_policy().name}
    import torch

    return {
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        # torch has no global policy: autocast is per region; the bench records what it wrapped.
        "mixed_precision": "none",
    }


def determinism_enabled(framework: str) -> bool:
    """Whether the framework's deterministic mode is on, read back (configure_framework sets it)."""
    if framework == "tf":
        # TensorFlow exposes the setter publicly, the getter only here.
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    import torch

    return bool(torch.are_deterministic_algorithms_enabled())


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
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_package_path(src_dir: Path) -> None:
    """Put the project's src/ first on PYTHONPATH for every job this process starts."""
    current = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if str(src_dir) not in current:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src_dir), *current])
