"""The SLURM profiles: how Snakemake resolves them (fast), and the smoke experiment
through `--profile profiles/slurm` on a real, local SLURM (slow).

tests/slurm/start.sh starts a single-node cluster (one declared GPU, no
accounting) and this test stops it again if it started it. What is checked
comes from SLURM and from the jobs, not from the profile's text: every job of
the DAG ran as a SLURM job except the localrules, the framework jobs were
submitted with one GPU and saw the GPU SLURM gave them, and every number equals
a local run's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import CONFIG_DIR, PROJECT_ROOT, run_snakemake
from fwbench.config import compose_config, experiment_grid, run_dir

SLURM_SCRIPTS = PROJECT_ROOT / "tests" / "slurm"
STATE_DIR = Path(os.environ.get("FWBENCH_SLURM_DIR", "/tmp/fwbench-slurm"))
PROFILE = PROJECT_ROOT / "profiles" / "slurm"
CPU_PROFILE = PROJECT_ROOT / "profiles" / "slurm-cpu"
EXPERIMENT = "experiment=smoke"
# Rules that must run on the submitting host (compute nodes may have no internet).
MUST_BE_LOCAL = {"download", "report"}
# Rules whose SLURM jobs must carry one GPU; the others none.
GPU_RULES = {"train", "evaluate", "bench"}
# Seconds before the first status check; the profile keeps the plugin's 40 s,
# which would make this test wait ~40 s per job.
FIRST_STATUS_CHECK_S = "5"
# Package install on a bare machine included.
START_TIMEOUT_S = 900
HISTORY_COMPARED = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
METRICS_COMPARED = ("test_accuracy", "test_loss", "per_class_accuracy", "confusion_matrix")


def running(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def slurm_cluster():
    """SLURM_CONF of the local test cluster, started (and afterwards stopped) here if need be."""
    if os.geteuid() != 0:
        pytest.skip("starting a local SLURM (tests/slurm/start.sh) needs root")
    env = {**os.environ, "FWBENCH_SLURM_DIR": str(STATE_DIR)}
    started_here = not running(STATE_DIR / "slurmctld.pid")
    result = subprocess.run(
        ["bash", str(SLURM_SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(STATE_DIR / "slurm.conf"))
        yield STATE_DIR / "slurm.conf"
    if started_here:
        subprocess.run(["bash", str(SLURM_SCRIPTS / "stop.sh")], env=env, check=True, timeout=START_TIMEOUT_S)


def path_overrides(base: Path) -> list[str]:
    return [f"paths.{name}={base / name}" for name in ("data", "results", "reports", "mlflow")]


def snakemake_config(base: Path) -> list[str]:
    return ["--config", EXPERIMENT, "overrides=" + " ".join(path_overrides(base))]


def job_counts(log: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before it runs anything."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def local_rules(log: str) -> set[str]:
    """The rules Snakemake ran on the submitting host (it logs them as `localrule`)."""
    return set(re.findall(r"^localrule (\w+):", log, flags=re.M))


def slurm_jobs(run_id: str) -> list[dict[str, str]]:
    """The SLURM jobs of one Snakemake run (the plugin names them after its run id)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True, check=True,
    ).stdout
    jobs = []
    for line in shown.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == run_id:
            jobs.append(fields)
    return jobs


def rule_of(job: dict[str, str]) -> str:
    """The plugin's comment is rule_<rule> or rule_<rule>_wildcards_<...>."""
    return re.match(r"rule_(\w+?)(_wildcards_.*)?$", job["Comment"]).group(1)


def gpus_requested(job: dict[str, str]) -> int:
    match = re.search(r"gres[:/]gpu(?::[\w.]+)?:(\d+)", job.get("TresPerJob", ""))
    return int(match.group(1)) if match else 0


def run_outputs(base: Path) -> dict[tuple, dict]:
    """history.json and metrics.json of every grid point, by (framework, model, seed)."""
    cfg = compose_config(CONFIG_DIR, [EXPERIMENT, *path_overrides(base)])
    outputs = {}
    for framework, model, seed in experiment_grid(cfg):
        run = run_dir(cfg, framework, model, seed)
        outputs[framework, model, seed] = {
            "history": json.loads((run / "history.json").read_text()),
            "metrics": json.loads((run / "metrics.json").read_text()),
        }
    return outputs


def numbers(output: dict) -> dict:
    return {
        "history": [{key: epoch[key] for key in HISTORY_COMPARED} for epoch in output["history"]["history"]],
        "metrics": {key: output["metrics"][key] for key in METRICS_COMPARED},
    }


def resolved_resources(dry_run_output: str) -> dict[str, dict[str, str]]:
    """rule -> the resources Snakemake resolved for (the first of) its jobs."""
    resources = {}
    for block in re.split(r"^rule ", dry_run_output, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        match = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if match and rule not in resources:
            resources[rule] = dict(item.split("=", 1) for item in match.group(1).split(", "))
    return resources


@pytest.mark.parametrize("profile", [PROFILE, CPU_PROFILE], ids=lambda path: path.name)
def test_profile_resolves_gpus_for_framework_jobs_only(profile, tmp_path):
    result = run_snakemake("--profile", str(profile), "-n", *snakemake_config(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resources = resolved_resources(result.stdout)
    assert {"preprocess", "train", "evaluate"} <= resources.keys()
    gpu_rules = GPU_RULES if profile == PROFILE else set()
    for rule, values in resources.items():
        assert values.get("gpu", "0") == ("1" if rule in gpu_rules else "0"), (rule, values)
        # A gpu_model on a CPU job would make the plugin request a GPU for it.
        assert values.get("gpu_model", "") == "" or rule in gpu_rules, (rule, values)
        assert int(values["runtime"]) > 0 and int(values["mem_mb"]) > 0, (rule, values)
    if "bench" in resources:
        assert resources["bench"]["slurm_extra"] == "--exclusive"


@pytest.mark.slow
@pytest.mark.slurm
def test_smoke_experiment_on_slurm_matches_a_local_run(slurm_cluster, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster.mkdir()

    # The reference needs the trained models and their test metrics, not the timings.
    local_run = run_snakemake("--cores", "2", "--until", "evaluate", *snakemake_config(local), cwd=local)
    assert local_run.returncode == 0, local_run.stderr[-5000:]
    slurm_run = run_snakemake(
        "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", FIRST_STATUS_CHECK_S,
        *snakemake_config(cluster), cwd=cluster,
    )
    log = slurm_run.stdout + slurm_run.stderr
    assert slurm_run.returncode == 0, log[-5000:]

    # Every job ran once: the localrules here, all others as SLURM jobs.
    dag, ran_here = job_counts(log), local_rules(log)
    assert MUST_BE_LOCAL & dag.keys() <= ran_here
    jobs = slurm_jobs(re.search(r"SLURM run ID: (\S+)", log).group(1))
    submitted = {}
    for job in jobs:
        assert job["JobState"] == "COMPLETED", job
        submitted[rule_of(job)] = submitted.get(rule_of(job), 0) + 1
    assert submitted == {rule: count for rule, count in dag.items() if rule not in ran_here}
    assert "train" in submitted and "evaluate" in submitted

    # The framework jobs asked SLURM for one GPU; the others for none.
    for job in jobs:
        assert gpus_requested(job) == (1 if rule_of(job) in GPU_RULES else 0), job

    slurm_outputs, local_outputs = run_outputs(cluster), run_outputs(local)
    job_ids = {job["JobId"] for job in jobs}
    for point, output in slurm_outputs.items():
        # The training job saw the GPU SLURM assigned (no driver here: it ran on the CPU).
        scheduler = output["history"]["scheduler"]
        assert scheduler["SLURM_JOB_ID"] in job_ids, point
        assert scheduler.get("SLURM_STEP_GPUS") or scheduler.get("SLURM_JOB_GPUS"), (point, scheduler)
        assert scheduler.get("CUDA_VISIBLE_DEVICES"), (point, scheduler)
        assert output["history"]["device"] in ("cpu", "cuda")
        # The evaluate job, a SLURM job of its own, records its job and device too.
        assert output["metrics"]["scheduler"]["SLURM_JOB_ID"] in job_ids, point
        assert output["metrics"]["device"] in ("cpu", "cuda")
        # Same seeds, same threads: the same numbers as the local run.
        assert numbers(output) == numbers(local_outputs[point]), point


def test_sweep_bench_jobs_ask_for_their_threads_as_cpus_per_task(tmp_path):
    """Each bench variant's thread count is its job's cpus_per_task (which the plugin prefers to cpus_per_gpu)."""
    overrides = "overrides=bench.threads=[1,2] " + " ".join(path_overrides(tmp_path))
    result = run_snakemake("--profile", str(PROFILE), "-n", "--config", "experiment=sweep", overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    asked = set()
    for block in re.split(r"^rule ", result.stdout, flags=re.M)[1:]:
        if not block.startswith("bench:"):
            continue
        wildcards = dict(re.findall(r"(\w+)=([\w.]+)", re.search(r"^\s+wildcards: (.*)$", block, flags=re.M).group(1)))
        resources = dict(re.findall(r"(\w+)=([\w.-]+)", re.search(r"^\s+resources: (.*)$", block, flags=re.M).group(1)))
        asked.add((wildcards["nthreads"], resources["cpus_per_task"]))
    assert asked == {("1", "1"), ("2", "2")}


def test_the_large_models_jobs_ask_for_a_gpu(tmp_path):
    """default's resnet18 and transformer bench jobs (and scale's training of them) get a GPU on the cluster."""
    for experiment, rule in (("default", "bench"), ("scale", "bench")):
        result = run_snakemake("--profile", str(PROFILE), "-n", "--config", f"experiment={experiment}",
                               "overrides=" + " ".join(path_overrides(tmp_path)), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        blocks = [block for block in re.split(r"^rule ", result.stdout, flags=re.M)[1:]
                  if block.startswith(f"{rule}:") and re.search(r"model=(resnet18|transformer),", block)]
        assert len(blocks) == 12, experiment  # 2 models x (tf graph, torch eager) x 3 replicates
        for block in blocks:
            resources = dict(item.split("=", 1) for item in
                             re.search(r"^\s+resources: (.*)$", block, flags=re.M).group(1).split(", "))
            assert resources["gpu"] == "1", block
