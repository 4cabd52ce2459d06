"""Run the bench grid on this machine's GPU; results go to reports/gpu-<device name>/.

    python scripts/gpu_bench.py                          # the default experiment's bench grid
    python scripts/gpu_bench.py bench.precision=bf16 bench.tf32=true
    python scripts/gpu_bench.py --cores 16 experiment.models=[convnet]

Runs Snakemake's bench_table target (every bench job, then the table) in a
work directory of its own (results/gpu-<name>/), with the project's processed
data, then copies bench_results.csv, bench_summary.csv and the jobs' logs
(their start and end times) into reports/gpu-<name>/ beside device.json, which
names the device. Run it with the venv's python (`make venv` installs the
package there). The jobs pick CUDA by themselves; this script only refuses
to start without a GPU. TensorFlow uses the GPU only when a CUDA build is
installed (`pip install tensorflow[and-cuda]`; the CPU venv has tensorflow-cpu):
every row records the device it ran on, so a CPU-only TensorFlow shows as
device=cpu rather than passing for a GPU number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from fwbench.runtime import nvidia_driver_version
EXIT_NO_GPU = 2
NVIDIA_SMI_TIMEOUT_S = 30
WORK_ROOT = ROOT / "results"
REPORTS_ROOT = ROOT / "reports"


def detect_gpu() -> str | None:
    """The first NVIDIA GPU's name (nvidia-smi, else torch), or None without one."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True,
        )
        names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if names:
            return names[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a folder name that still reads as the device."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def report_folder(reports_dir: Path, device: str) -> Path:
    return Path(reports_dir) / f"gpu-{device_slug(device)}"


def bench_table_paths(overrides: list[str]) -> tuple[Path, Path, Path]:
    """Where the bench table, its summary and its schedule land for these overrides (relative to the work
    directory)."""
    from fwbench.bench.outputs import results_path, schedule_path, summary_path
    from fwbench.config import compose_config

    cfg = compose_config(ROOT / "config", overrides)
    return results_path(cfg), summary_path(cfg), schedule_path(cfg)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_ROOT)
    parser.add_argument("--work-root", type=Path, default=WORK_ROOT,
                        help="Snakemake's working directory goes under it (default: results/)")
    parser.add_argument("--cores", default="all", help="Snakemake --cores (default: all)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for snakemake --config")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    device = detect_gpu()
    if device is None:
        print("fwbench: error: no GPU found (nvidia-smi and torch.cuda see none): "
              "accepted is a machine with an NVIDIA GPU", file=sys.stderr)
        return EXIT_NO_GPU
    folder = report_folder(args.reports_dir, device)
    work_dir = args.work_root / folder.name
    # The project's processed data unless the overrides say otherwise (later overrides win).
    overrides = [f"paths.data={ROOT / 'data'}", *args.overrides]
    results, summary, schedule = bench_table_paths(overrides)
    command = [
        str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
        # Snakemake takes only identifiers as --config keys: Hydra's dotted overrides travel in one.
        "--directory", str(work_dir), "--cores", str(args.cores), "--config", f"overrides={shlex.join(overrides)}",
        "--", str(results),
    ]
    started = time.time()
    print(f"bench on {device} -> {folder}", flush=True)
    completed = subprocess.run(command, cwd=ROOT, env=os.environ)
    if completed.returncode != 0:
        print(f"fwbench: error: snakemake failed (exit {completed.returncode}); see {work_dir}/logs", file=sys.stderr)
        return completed.returncode
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work_dir / results, folder / results.name)
    shutil.copy2(work_dir / summary, folder / summary.name)
    shutil.copy2(work_dir / schedule, folder / schedule.name)
    shutil.copytree(work_dir / "logs", folder / "logs", dirs_exist_ok=True)
    (folder / "device.json").write_text(json.dumps({
        "device": device,
        "driver": nvidia_driver_version(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "started_unix": started,
        "finished_unix": time.time(),
        "overrides": overrides,
        "command": command,
    }, indent=2) + "\n")
    print(f"wrote {folder / results.name} and {folder / 'device.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
