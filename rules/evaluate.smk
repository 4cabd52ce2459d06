rule evaluate:
    input:
        history=f"{RUN_DIR}/history.json",
        model=f"{RUN_DIR}/model",
    output:
        metrics=f"{RUN_DIR}/metrics.json",
    log:
        f"logs/{RUN_KEY}/evaluate.log",
    benchmark:
        f"benchmarks/{RUN_KEY}/evaluate.tsv"
    params:
        overrides=OVERRIDES_ARG,
    threads: 1
    conda:
        "../envs/{framework}.yaml"
    shell:
        "python {workflow.basedir}/scripts/evaluate.py {params.overrides}"
        " framework={wildcards.framework} model={wildcards.model}"
        " seed={wildcards.seed} threads={threads} > {log} 2>&1"
