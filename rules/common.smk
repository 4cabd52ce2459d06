# Compose the Hydra config (the same tree scripts/ use), validate it, and derive
# the experiment grid, the file patterns and the input functions.
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SRC_DIR = Path(workflow.basedir) / "src"
SCRIPTS_DIR = Path(workflow.basedir) / "scripts"
# The only place that puts src/ on the path, for --use-conda: there Snakemake may
# come from a conda env without the package (the venv has it through pip -e).
sys.path.insert(0, str(SRC_DIR))

from fwbench.config import (  # noqa: E402
    PROCESSED,
    SYNTHETIC,
    compose_config,
    dataset_of,
    experiment_grid,
    overrides_from_mapping,
    processed_dir,
    raw_dir,
    raw_path,
    processed_path,
    report_dir,
    run_dir,
    run_path,
)
from fwbench.bench.grid import AUTO_THREADS, all_frameworks, bench_models, check_settings, thread_counts  # noqa: E402
from fwbench.data.preprocess import MANIFEST_NAME  # noqa: E402
from fwbench.data.download import dataset_files  # noqa: E402
from fwbench.errors import FwbenchError  # noqa: E402
from fwbench.runtime import export_package_path  # noqa: E402
from fwbench.tracking.runs import parent_run_file  # noqa: E402

# Jobs import the project's package from its source tree: the same in the venv,
# in the per-framework conda envs and on cluster nodes, with no pip -e of a
# relative path (Snakemake copies env files elsewhere before creating them).
export_package_path(SRC_DIR)

CONFIG_DIR = Path(workflow.basedir) / "config"


def job_cores():
    """The cores one job may have: --cores on this machine; None where that is not known here.

    On a cluster (an executor with --jobs: Snakemake sets `nodes`, and the executor plugin is not
    loaded yet while the Snakefile is read) the node decides; `snakemake --lint` reads the workflow
    with 1 core whatever the profile says, and runs nothing.
    """
    if workflow.resource_settings.nodes is not None or "--lint" in sys.argv:
        return None
    return int(workflow.resource_settings.cores)


def with_thread_list(overrides, cfg, cores):
    """bench.threads=auto expanded here, once, into the overrides every job gets: a job on another machine
    (a cluster node) then composes the same bench grid."""
    counts = thread_counts(cfg, cores)
    return [*overrides, f"bench.threads=[{','.join(str(count) for count in counts)}]"]


# `snakemake --config experiment=smoke trainer.epochs=2` -> Hydra overrides.
HYDRA_OVERRIDES = overrides_from_mapping(config)
JOB_CORES = job_cores()
try:
    CFG = compose_config(CONFIG_DIR, HYDRA_OVERRIDES)
    if CFG.bench.threads == AUTO_THREADS:
        HYDRA_OVERRIDES = with_thread_list(HYDRA_OVERRIDES, CFG, JOB_CORES)
        CFG = compose_config(CONFIG_DIR, HYDRA_OVERRIDES)
    # Threads beyond --cores: Snakemake would quietly give the job fewer than its variant says.
    check_settings(CFG, JOB_CORES)
except FwbenchError as error:
    raise WorkflowError(f"fwbench: invalid config: {error}") from None

# Passed on to every job so the scripts compose exactly this config.
OVERRIDES_ARG = shlex.join(HYDRA_OVERRIDES)
EXPERIMENT = CFG.experiment.name
# The experiment's dataset: it names the bench files, the MLflow parent run and the report's logs.
DATASET = CFG.experiment.dataset
try:
    GRID = experiment_grid(CFG)
except FwbenchError as error:
    raise WorkflowError(f"fwbench: invalid config: {error}") from None


def dataset_readers():
    """{dataset: the first model of the run that reads it} (experiment.model_datasets gives a model its
    own): a data job composes its config as that model's jobs do, so it gets the same dataset."""
    readers = {}
    for model in dict.fromkeys([*CFG.experiment.models, *bench_models(CFG)]):
        readers.setdefault(dataset_of(CFG, model), model)
    return readers


DATASET_READERS = dataset_readers()
try:
    DATASET_CFGS = {dataset: compose_config(CONFIG_DIR, [*HYDRA_OVERRIDES, f"model={model}"])
                    for dataset, model in DATASET_READERS.items()}
except FwbenchError as error:
    raise WorkflowError(f"fwbench: invalid config: {error}") from None
# Per dataset: the files its download fetches (none for digits or synthetic data) and its manifest.
RAW_FILES = {dataset: [str(raw_dir(cfg) / spec.name) for spec in dataset_files(cfg.dataset)]
             for dataset, cfg in DATASET_CFGS.items()}
MANIFESTS = {dataset: str(processed_dir(cfg) / MANIFEST_NAME) for dataset, cfg in DATASET_CFGS.items()}
RAW_FILE = str(raw_path(CFG, "{dataset}", "{file}"))
MANIFEST = str(processed_path(CFG, "{dataset}", "{kind}") / MANIFEST_NAME)

# Placeholders stay as Snakemake wildcards: the same function names the paths
# the scripts write to when run by hand.
RUN_DIR = str(run_path(CFG, "{dataset}", "{framework}", "{model}", "{seed}"))
RUN_KEY = f"{EXPERIMENT}/{{dataset}}/{{framework}}/{{model}}/seed{{seed}}"
REPORT_DIR = str(report_dir(CFG))
REPORT_HTML = f"{REPORT_DIR}/comparison.html"
REPORT_MD = f"{REPORT_DIR}/comparison.md"
# MLflow parent run of this experiment and dataset (rules/tracking.smk); train/evaluate/bench need it.
TRACKING_PARENT = str(parent_run_file(CFG))


wildcard_constraints:
    # Every arm trained or benched (bench.frameworks may add arms that are not trained).
    framework="|".join(all_frameworks(CFG)),
    model="|".join(dict.fromkeys([*CFG.experiment.models, *bench_models(CFG)])),
    dataset="|".join(DATASET_READERS),
    kind=f"{PROCESSED}|{SYNTHETIC}",
    seed=r"\d+",


def dataset_files_of(wildcards):
    """The raw files a dataset's preprocess reads (none for digits or synthetic data)."""
    return RAW_FILES[wildcards.dataset]


def reader_of(wildcards):
    """The model whose config a data job composes (dataset_readers)."""
    return DATASET_READERS[wildcards.dataset]


def model_manifest(wildcards):
    """The manifest of the dataset the job's model reads: its arrays are the job's input."""
    return MANIFESTS[dataset_of(CFG, wildcards.model)]


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


# ---- Speed and memory runs (rules/bench.smk) -----------------------------------
# One bench job per framework x model x mode x replicate (config/bench), each a
# process of its own, in the interleaved order of fwbench.bench.bench_schedule:
# every job takes the previous job's rows as an input, so the DAG runs them in
# exactly that order. Timed jobs also run alone:
# every job holds one share of the machine (MACHINE_SHARE); a timed job asks for
# more shares than any cap, Snakemake lowers that to the cap set in
# profiles/default/config.yaml (`resources:`), so a timed job holds them all and
# nothing runs beside it, whatever --cores and set-threads are.
from snakemake.logging import logger  # noqa: E402

from fwbench.bench.grid import MODES, bench_schedule, scheduled_job  # noqa: E402
from fwbench.bench.outputs import (  # noqa: E402
    job_record_path,
    job_rows_path,
    results_path as bench_results_path,
    schedule_path as bench_schedule_path,
    summary_path as bench_summary_path,
)

BENCH_SCHEDULE = bench_schedule(CFG)
BENCH_JOB = ("{framework}", "{model}", "{mode}", "{batch}", "{nthreads}", "{replicate}")
BENCH_ROWS = str(job_rows_path(CFG, *BENCH_JOB))
BENCH_RECORD = str(job_record_path(CFG, *BENCH_JOB))
BENCH_KEY = f"{EXPERIMENT}/{DATASET}/bench/{{framework}}/{{model}}/{{mode}}/b{{batch}}-t{{nthreads}}/r{{replicate}}"
BENCH_RESULTS = str(bench_results_path(CFG))
BENCH_SUMMARY = str(bench_summary_path(CFG))
BENCH_SCHEDULE_FILE = str(bench_schedule_path(CFG))

MACHINE_SHARE = "machine_share"
UNTIMED_JOB_SHARES = 1
# More than any cap: a job never gets more of a resource than its global cap.
TIMED_JOB_SHARES = 1_000_000
TIMED_RULES = ("bench",)


wildcard_constraints:
    mode="|".join(sorted({mode for modes in MODES.values() for mode in modes})),
    batch=r"\d+",
    nthreads=r"\d+",
    replicate=r"\d+",


def all_bench_rows(wildcards):
    """One rows file per process of the bench schedule."""
    return [str(job_rows_path(CFG, *job.variant, job.replicate)) for job in BENCH_SCHEDULE]


def all_bench_records(wildcards):
    """One job record (config and tags, for the process's MLflow run) per process of the bench schedule."""
    return [str(job_record_path(CFG, *job.variant, job.replicate)) for job in BENCH_SCHEDULE]


def previous_bench_rows(wildcards):
    """The rows of the process before this one in the schedule (none for the first): the order as a DAG edge."""
    try:
        variant = (wildcards.framework, wildcards.model, wildcards.mode, int(wildcards.batch), int(wildcards.nthreads))
        job = scheduled_job(CFG, variant, int(wildcards.replicate))
    except FwbenchError as error:
        raise WorkflowError(f"fwbench: {error}") from None
    if job.position == 0:
        return []
    previous = BENCH_SCHEDULE[job.position - 1]
    return [str(job_rows_path(CFG, *previous.variant, previous.replicate))]


def bench_job_threads(wildcards):
    """A bench job's threads are its variant's (bench.threads), locally and as SLURM's cpus_per_task."""
    return int(wildcards.nthreads)


def hold_machine_shares(rules):
    """Give every untimed rule one machine share, so a timed job (all shares) waits for them.

    Called at the end of rules/bench.smk, after every rule is defined. A share
    a profile sets (set-resources) is kept.
    """
    if MACHINE_SHARE not in workflow.global_resources:
        logger.warning(
            f"fwbench: no '{MACHINE_SHARE}' cap in --resources (profiles/default/config.yaml): "
            "timed bench jobs may run beside other jobs"
        )
    for defined in rules:
        if defined.name not in TIMED_RULES and MACHINE_SHARE not in defined.resources:
            defined.resources[MACHINE_SHARE] = UNTIMED_JOB_SHARES
