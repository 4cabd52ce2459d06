rule train:
    input:
        model_manifest,
        parent=TRACKING_PARENT,
    output:
        history=f"{RUN_DIR}/history.json",
        model=directory(f"{RUN_DIR}/model"),
    log:
        f"logs/{RUN_KEY}/train.log",
    benchmark:
        f"benchmarks/{RUN_KEY}/train.tsv"
    params:
        script=SCRIPTS_DIR / "train.py",
        overrides=OVERRIDES_ARG,
    threads: 1
    conda:
        "../envs/{framework}.yaml"
    shell:
        tracking_env("train") + "python {params.script} {params.overrides}"
        " framework={wildcards.framework} model={wildcards.model}"
        " seed={wildcards.seed} threads={threads} > {log} 2>&1"
