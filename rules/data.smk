# One download job per raw file, one preprocess job per dataset the run reads (the experiment's,
# and any a model reads instead: experiment.model_datasets). A data job composes its config as a
# model reading that dataset does (reader_of), so it writes where that model's jobs look.
rule download:
    output:
        RAW_FILE,
    log:
        "logs/{dataset}/download/{file}.log",
    params:
        script=SCRIPTS_DIR / "download.py",
        overrides=OVERRIDES_ARG,
        model=reader_of,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} model={params.model} download_file={wildcards.file:q}"
        " > {log} 2>&1"


rule preprocess:
    input:
        dataset_files_of,
    output:
        manifest=MANIFEST,
    log:
        "logs/{dataset}/{kind}/preprocess.log",
    params:
        script=SCRIPTS_DIR / "preprocess.py",
        overrides=OVERRIDES_ARG,
        model=reader_of,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} model={params.model} > {log} 2>&1"
