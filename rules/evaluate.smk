rule evaluate:
    input:
        history=f"{RUN_DIR}/history.json",
        model=f"{RUN_DIR}/model",
        parent=TRACKING_PARENT,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
    log:
        f"logs/{RUN_KEY}/evaluate.log",
    benchmark:
        f"benchmarks/{RUN_KEY}/evaluate.tsv"
    params:
        script=SCRIPTS_DIR / "evaluate.py",
        overrides=OVERRIDES_ARG,
    threads: 1
    conda:
        "../envs/{framework}.yaml"
    shell:
        tracking_env("evaluate") + "python {params.script} {params.overrides}"
        " framework={wildcards.framework} model={wildcards.model}"
        " seed={wildcards.seed} threads={threads} > {log} 2>&1"
