# Compose the Hydra config (the same tree scripts/ use), validate it, and derive
# the experiment grid, the file patterns and the input functions.
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SRC_DIR = Path(workflow.basedir) / "src"
SCRIPTS_DIR = Path(workflow.basedir) / "scripts"
sys.path.insert(0, str(SRC_DIR))

from fwbench.config import (  # noqa: E402
    compose_config,
    experiment_grid,
    overrides_from_mapping,
    processed_dir,
    raw_dir,
    report_dir,
    run_dir,
)
from fwbench.errors import FwbenchError  # noqa: E402
from fwbench.runtime import export_package_path  # noqa: E402

# Jobs import the project's package from its source tree: the same in the venv,
# in the per-framework conda envs and on cluster nodes, with no pip -e of a
# relative path (Snakemake copies env files elsewhere before creating them).
export_package_path(SRC_DIR)

CONFIG_DIR = Path(workflow.basedir) / "config"
# `snakemake --config experiment=smoke trainer.epochs=2` -> Hydra overrides.
HYDRA_OVERRIDES = overrides_from_mapping(config)
try:
    CFG = compose_config(CONFIG_DIR, HYDRA_OVERRIDES)
except FwbenchError as error:
    raise WorkflowError(f"fwbench: invalid config: {error}") from None

# Passed on to every job so the scripts compose exactly this config.
OVERRIDES_ARG = shlex.join(HYDRA_OVERRIDES)
EXPERIMENT = CFG.experiment.name
DATASET = CFG.dataset.name
GRID = experiment_grid(CFG)

RAW_DIR = raw_dir(CFG)
RAW_FILES = [str(RAW_DIR / spec.name) for spec in CFG.dataset.get("files", {}).values()]
PROCESSED_DIR = processed_dir(CFG)
PROCESSED_MANIFEST = str(PROCESSED_DIR / "manifest.json")

# Placeholders stay as Snakemake wildcards: the same function names the paths
# the scripts write to when run by hand.
RUN_DIR = str(run_dir(CFG, "{framework}", "{model}", "{seed}"))
RUN_KEY = f"{EXPERIMENT}/{DATASET}/{{framework}}/{{model}}/seed{{seed}}"
REPORT_HTML = str(report_dir(CFG) / "comparison.html")
REPORT_MD = str(report_dir(CFG) / "comparison.md")


wildcard_constraints:
    framework="|".join(CFG.experiment.frameworks),
    model="|".join(CFG.experiment.models),
    seed=r"\d+",


def grid_files(filename):
    """One path per (framework, model, seed) of the experiment grid."""
    return [
        str(run_dir(CFG, framework, model, seed) / filename)
        for framework, model, seed in GRID
    ]


def all_histories(wildcards):
    return grid_files("history.json")


def all_metrics(wildcards):
    return grid_files("metrics.json")
