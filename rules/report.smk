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
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {workflow.basedir}/scripts/report.py {params.overrides} > {log} 2>&1"
