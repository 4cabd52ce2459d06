# Speed and memory runs: one job per framework x model x execution mode x
# batch size x threads x replicate (src/fwbench/bench), in the schedule's interleaved order (each job
# waits for the previous one's rows). Timed jobs run alone (see the bench
# section of rules/common.smk); each logs its start and end time, and
# bench_table refuses rows whose jobs overlapped. A bench job does not import MLflow: bench_table
# logs every job's run, in one process, so MLflow's import and writes stay out of
# the serial chain of timed jobs. Include this file after every other rule file.


localrules:
    bench_table,


rule bench:
    input:
        model_manifest,
        parent=TRACKING_PARENT,
        previous=previous_bench_rows,
    output:
        rows=BENCH_ROWS,
        record=BENCH_RECORD,
    log:
        f"logs/{BENCH_KEY}.log",
    # No `benchmark:` here: Snakemake's sampler would read the job's /proc files while
    # it measures (bench/README.md). The job records its own start, end and peak memory.
    params:
        script=SCRIPTS_DIR / "bench.py",
        overrides=OVERRIDES_ARG,
    threads: bench_job_threads
    resources:
        machine_share=TIMED_JOB_SHARES,
        cpus_per_task=bench_job_threads,
    conda:
        "../envs/{framework}.yaml"
    shell:
        tracking_env("bench") + "python {params.script} {params.overrides}"
        " framework={wildcards.framework} model={wildcards.model} bench.mode={wildcards.mode}"
        " trainer.batch_size={wildcards.batch} threads={threads} bench.replicate={wildcards.replicate}"
        " > {log} 2>&1"


# The tidy table the report reads (one row per framework x model x mode x
# replicate x window), its per-variant summary and the schedule as it ran; logs
# each bench process's MLflow run from its record.
rule bench_table:
    input:
        rows=all_bench_rows,
        records=all_bench_records,
        parent=TRACKING_PARENT,
    output:
        results=BENCH_RESULTS,
        summary=BENCH_SUMMARY,
        schedule=BENCH_SCHEDULE_FILE,
    log:
        f"logs/{EXPERIMENT}/{DATASET}/bench/bench_table.log",
    params:
        script=SCRIPTS_DIR / "bench.py",
        overrides=OVERRIDES_ARG,
    conda:
        "../envs/report.yaml"
    shell:
        "python {params.script} aggregate {params.overrides} > {log} 2>&1"


hold_machine_shares(workflow.rules)
