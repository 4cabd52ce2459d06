"""Speed and memory runs: every bench variant (framework x model x mode) in several processes.

The process is the unit of replication: a variant is measured in
`bench.replicates` independent processes (jobs), and the intervals of the
report are over processes, never over windows of one process. The timed
processes run one at a time in a seeded, interleaved order (`bench_schedule`:
randomised blocks, each block runs every variant once in a shuffled order), so
that the machine's slow drift reaches every side alike.

A job (scripts/bench.py, `run.bench_variant`) trains with the pipeline's own
adapters (Keras `fit` on in-memory arrays; the torch adapter's loop over
pre-loaded tensors) with the trainer config the training runs use, and measures:

- training throughput (samples/s) over exactly `windows` windows of
  `window_steps` steps each, after `warmup_steps` untimed steps; every window
  is a row, none is selected (timing.TrainingPlan);
- time to the end of the first step (tracing and compilation), on its own;
- inference latency at batch 1 (p50/p95/p99 over `latency_calls` calls) and
  inference throughput at `trainer.eval_batch_size`, once per window;
- memory that the code owns: the peak of anonymous memory above the
  process's baseline after the framework import and the data load, in an
  untimed phase after the windows (memory.AnonPeak); the total peak RSS per
  window beside it, for reference, and on a GPU the framework's peak device
  allocation;
- parameter count and analytic forward FLOPs per sample.

It writes one CSV row per window (outputs.RESULT_COLUMNS); `aggregate` joins every
job's rows into bench_results.csv (the tidy table the report reads), a
per-variant summary with the within- and between-process spread, and the
schedule as it ran.

The modules: grid (variants, replicates, the schedule), outputs (file names,
paths, columns), run (one job, and the aggregation), timing, memory,
contention (what else used the CPU), table (checks and summary). grid and
outputs stay free of TensorFlow, torch and pandas: rules/common.smk imports
them to build the DAG.
"""
