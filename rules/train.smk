rule train:
    input:
        PROCESSED_MANIFEST,
    output:
        history=f"{RUN_DIR}/history.json",
        model=directory(f"{RUN_DIR}/model"),
    log:
        f"logs/{RUN_KEY}/train.log",
    benchmark:
        f"benchmarks/{RUN_KEY}/train.tsv"
    params:
        overrides=OVERRIDES_ARG,
    threads: 1
    conda:
        "../envs/{framework}.yaml"
    shell:
        "python {workflow.basedir}/scripts/train.py {params.overrides}"
        " framework={wildcards.framework} model={wildcards.model}"
        " seed={wildcards.seed} threads={threads} > {log} 2>&1"
