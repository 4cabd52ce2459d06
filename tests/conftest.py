"""Shared fixtures: the project's paths and a runner for its entry points."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "config"
SCRIPTS_DIR = PROJECT_ROOT / "scripts"
BIN_DIR = Path(sys.executable).parent


# The dataset each model is tested with where it needs another input than Fashion-MNIST's images.
MODEL_DATASETS = {"resnet18": "cifar10", "transformer": "imdb", "lstm": "imdb", "ncf": "movielens_100k"}


@functools.lru_cache(maxsize=None)
def model_and_dataset(name: str):
    """The model group `name` (config/model/<name>.yaml) and its dataset (MODEL_DATASETS, else
    fashion_mnist), composed as the pipeline composes them; composed once per model (callers only read them)."""
    from fwbench.config import compose_config

    dataset = MODEL_DATASETS.get(name, "fashion_mnist")
    cfg = compose_config(CONFIG_DIR, [f"model={name}", f"dataset={dataset}", f"experiment.models=[{name}]",
                                      "bench.frameworks=null", "bench.models=null"])
    return cfg.model, cfg.dataset


def model_config(name: str):
    """The model group `name` as the pipeline composes it (config/model/<name>.yaml)."""
    return model_and_dataset(name)[0]


def model_inputs(name: str, batch: int, seed: int = 0):
    """(model config, input shape, class count, a batch of inputs in the model's dtype and ranges)."""
    from fwbench.data.synthetic import inputs, sample_shape

    model_cfg, dataset_cfg = model_and_dataset(name)
    sample = inputs(dataset_cfg, str(dataset_cfg.get("input", "image")), batch, np.random.default_rng(seed))
    return model_cfg, sample_shape(dataset_cfg), int(dataset_cfg.num_classes), sample


def project_env() -> dict[str, str]:
    """The environment jobs get: the venv's python first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_script(name: str, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / f"{name}.py"), *overrides],
        cwd=PROJECT_ROOT, env=project_env(), capture_output=True, text=True, timeout=timeout,
    )


def run_snakemake(*args: str, cwd: Path = PROJECT_ROOT, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN_DIR / "snakemake"), "--snakefile", str(PROJECT_ROOT / "Snakefile"), *args],
        cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout,
    )


def redirected_paths(base: Path) -> list[str]:
    """Overrides that keep a test's data, results and reports out of the project tree."""
    return [
        f"paths.data={base / 'data'}",
        f"paths.results={base / 'results'}",
        f"paths.reports={base / 'reports'}",
        f"paths.mlflow={base / 'mlruns'}",
    ]


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke experiment's preprocessed digits, made once per test session."""
    base = tmp_path_factory.mktemp("smoke")
    result = run_script("preprocess", "experiment=smoke", *redirected_paths(base))
    assert result.returncode == 0, result.stderr
    return base
