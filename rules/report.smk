# The report reads only the DAG's own files; its figures are marked for `snakemake --report`.
rule report:
    input:
        histories=all_histories,
        metrics=all_metrics,
        bench=BENCH_RESULTS,
    output:
        html=REPORT_HTML,
        markdown=REPORT_MD,
        results=f"{REPORT_DIR}/results.csv",
        claims=f"{REPORT_DIR}/claims.csv",
        accuracy=report(f"{REPORT_DIR}/figures/accuracy.png", caption="../docs/captions/accuracy.rst", category="Accuracy"),
        curves=report(f"{REPORT_DIR}/figures/learning_curves.png", caption="../docs/captions/learning_curves.rst", category="Accuracy"),
        throughput=report(f"{REPORT_DIR}/figures/throughput.png", caption="../docs/captions/throughput.rst", category="Speed"),
        first_step=report(f"{REPORT_DIR}/figures/first_step.png", caption="../docs/captions/first_step.rst", category="Speed"),
        latency=report(f"{REPORT_DIR}/figures/latency.png", caption="../docs/captions/latency.rst", category="Speed"),
        memory=report(f"{REPORT_DIR}/figures/memory.png", caption="../docs/captions/memory.rst", category="Memory"),
    log:
        f"logs/{EXPERIMENT}/{DATASET}/report.log",
    params:
        script=SCRIPTS_DIR / "report.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} {params.overrides} > {log} 2>&1"
