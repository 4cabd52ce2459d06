rule download:
    output:
        RAW_FILES,
    log:
        f"logs/{DATASET}/download.log",
    params:
        script=SCRIPTS_DIR / "download.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} > {log} 2>&1"


rule preprocess:
    input:
        RAW_FILES,
    output:
        manifest=PROCESSED_MANIFEST,
    log:
        f"logs/{DATASET}/preprocess.log",
    params:
        script=SCRIPTS_DIR / "preprocess.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} > {log} 2>&1"
