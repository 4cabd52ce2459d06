"""MLflow tracking for the pipeline: one store, one experiment per (experiment, dataset), one parent run
per generation of results, one child run per train/evaluate/bench job.

`store`: where the store is, creating and probing it, retrying its transient
errors. `runs`: the parent run, the child runs and what they log.

The pipeline's own files stay the source of the report; MLflow mirrors the same
numbers so people can browse, filter and compare runs, and every result file
carries the id of the MLflow run that produced it. Concurrency is designed, not
hoped for: the default store is SQLite, which many parallel Snakemake jobs
write at once (fwbench.tracking.store says how that stays safe).
"""
