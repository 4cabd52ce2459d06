rule download:
    output:
        RAW_FILES,
    log:
        f"logs/{DATASET}/download.log",
    params:
        overrides=OVERRIDES_ARG,
    shell:
        "python {workflow.basedir}/scripts/download.py {params.overrides} > {log} 2>&1"


rule preprocess:
    input:
        RAW_FILES,
    output:
        manifest=PROCESSED_MANIFEST,
    log:
        f"logs/{DATASET}/preprocess.log",
    params:
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {workflow.basedir}/scripts/preprocess.py {params.overrides} > {log} 2>&1"
