"""The conda env files (envs/*.yaml) that `snakemake --use-conda` builds per job.

No conda here, so nothing is created: the files must parse, pin exactly what
requirements.lock (the venv) pins, and every job of the DAG must resolve its
env file. For the last, a stand-in `conda` answers the few queries Snakemake
makes before it would create anything (`conda info --json`, `conda --version`,
channel priority); without any conda, `snakemake --use-conda -n` stops at
`conda info` before looking at a single env file.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONFIG_DIR, PROJECT_ROOT, redirected_paths, run_snakemake
from fwbench.bench.grid import all_frameworks
from fwbench.config import compose_config

ENVS_DIR = PROJECT_ROOT / "envs"
LOCK_FILE = PROJECT_ROOT / "requirements.lock"
# One per arm (config/framework) and the report's.
EXPECTED_ENVS = {f"{path.stem}.yaml" for path in (PROJECT_ROOT / "config" / "framework").glob("*.yaml")} | {"report.yaml"}
# The venv has TensorFlow's CPU wheel; tf.yaml has the CUDA one of the same version.
LOCK_NAME = {"tensorflow": "tensorflow-cpu"}
# conda packages that carry no version of their own worth pinning.
UNPINNED_CONDA = {"pip"}
PIP_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==([^\s;]+)$")
CONDA_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=([^=\s]+)$")
ENV_FILES = sorted(ENVS_DIR.glob("*.yaml"))

STAND_IN_CONDA = """#!/bin/sh
# Answers what Snakemake asks before creating an env; anything else fails loudly.
case "$*" in
  "info --json") echo '{{"conda_prefix": "{prefix}", "platform": "linux-64", "envs_dirs": []}}' ;;
  "--version") echo "conda 25.1.1" ;;
  "config --get channel_priority --json") echo '{{"get": {{"channel_priority": "strict"}}}}' ;;
  *) echo "stand-in conda cannot: $*" >&2; exit 1 ;;
esac
"""


def normalize(name: str) -> str:
    """PEP 503 names: case and the separators -, _ and . do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version
    return pins


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def split_dependencies(env: dict) -> tuple[list[str], list[str]]:
    """(conda specs, pip specs) of an env file."""
    conda, pip = [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip += entry["pip"]
        else:
            conda.append(entry)
    return conda, pip


def test_one_env_file_per_framework_and_the_reports():
    assert {path.name for path in ENV_FILES} == EXPECTED_ENVS


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_env_file_parses_and_names_channels(path):
    env = load_env(path)
    assert isinstance(env, dict)
    assert env["name"].startswith("fwbench-")
    assert env["channels"]
    assert isinstance(env["dependencies"], list) and env["dependencies"]


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_every_pip_pin_matches_requirements_lock(path):
    _, pip = split_dependencies(load_env(path))
    assert pip, f"{path.name} installs nothing with pip"
    pins = lock_pins()
    for spec in pip:
        match = PIP_PIN.match(spec)
        assert match, f"{path.name}: '{spec}' is not pinned as name==version"
        name, _, version = match.groups()
        lock_name = normalize(LOCK_NAME.get(normalize(name), name))
        assert lock_name in pins, f"{path.name}: {name} is not in requirements.lock"
        assert version == pins[lock_name], f"{path.name}: {spec} but requirements.lock has {pins[lock_name]}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_conda_packages_are_pinned_and_python_is_the_venvs(path):
    conda, _ = split_dependencies(load_env(path))
    venv_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = lock_pins()
    for spec in conda:
        if spec in UNPINNED_CONDA:
            continue
        match = CONDA_PIN.match(spec)
        assert match, f"{path.name}: conda package '{spec}' is not pinned as name=version"
        name, version = match.groups()
        if name == "python":
            assert version == venv_python, f"{path.name}: python={version}, the lock was made with {venv_python}"
        else:
            assert pins.get(normalize(name)) == version, f"{path.name}: {spec} differs from requirements.lock"


@pytest.mark.parametrize("name", ["tf.yaml", "tf_native.yaml"])
def test_tf_envs_get_the_cuda_build(name):
    _, pip = split_dependencies(load_env(ENVS_DIR / name))
    assert any(spec.startswith("tensorflow[and-cuda]==") for spec in pip)


@pytest.fixture
def stand_in_conda(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    conda.write_text(STAND_IN_CONDA.format(prefix=tmp_path / "conda"))
    conda.chmod(conda.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.mark.parametrize("experiment", ["default", "arms", "smoke", "backends"])
def test_every_job_of_the_dag_resolves_its_env_file(stand_in_conda, tmp_path, experiment):
    config = ["--config", f"experiment={experiment}", "overrides=" + " ".join(redirected_paths(tmp_path))]
    dry_run = run_snakemake("-n", "--use-conda", *config, cwd=tmp_path)
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]

    listed = run_snakemake("--list-conda-envs", *config, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    fields = [line.split("\t") for line in listed.stdout.splitlines()]
    env_files = {Path(row[0]) for row in fields if row[0].endswith(".yaml")}
    # Every wildcard value (each arm of the experiment) resolved to a file that exists.
    cfg = compose_config(CONFIG_DIR, [f"experiment={experiment}"])
    expected = {f"{framework}.yaml" for framework in all_frameworks(cfg)} | {"report.yaml"}
    assert {path.resolve() for path in env_files} == {(ENVS_DIR / name).resolve() for name in expected}
