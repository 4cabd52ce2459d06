# MLflow tracking (docs/tracking.md): the first rule creates the store, the experiment
# and the parent run; train, evaluate and bench jobs take its file as input and log
# child runs under it. No job ever creates the store, so no two jobs race to.

# Rules that log a child run put tracking_env("<rule>") before their shell command.
from fwbench.tracking.runs import tracking_env


localrules:
    start_tracking,


# One parent run per generation of results: created when its file is missing,
# kept until the file is removed (or `--forcerun start_tracking`), which reruns
# every job under a new parent. On failure the script's last line, the one-line
# error (e.g. naming an unreachable tracking URI), is echoed to the console.
rule start_tracking:
    output:
        TRACKING_PARENT,
    log:
        f"logs/{EXPERIMENT}/{DATASET}/start_tracking.log",
    params:
        script=SCRIPTS_DIR / "start_tracking.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} > {log} 2>&1"
        " || {{ tail -n 1 {log} >&2; exit 1; }}"
