rule report:
    input:
        histories=all_histories,
        metrics=all_metrics,
    output:
        html=REPORT_HTML,
        markdown=REPORT_MD,
    log:
        f"logs/{EXPERIMENT}/{DATASET}/report.log",
    params:
        script=SCRIPTS_DIR / "report.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} > {log} 2>&1"
