"""Is the pipeline's training step as fast as the framework's own minimal loop?

For every framework and mode (fwbench.bench.MODES) it trains the same model on
the same preprocessed arrays two ways, in one process per mode:

- pipeline: the adapter's `train_epoch`, called as fwbench.training.loop.fit
  calls it (sample order, SIGTERM poll); Keras: `fit` with the stop callback
  on re-ordered arrays; torch: the adapter's loop over pre-loaded tensors;
- minimal: what a user writes. Keras: `model.fit(x, y, batch_size, epochs=1,
  shuffle=False, verbose=0)` on arrays already in that order; torch: a plain
  loop over pre-loaded NCHW tensors (zero_grad, forward, loss, backward, step).

Both use the same model and optimizer objects in the same mode, so only the
loop around the step differs. After one untimed call of each (tracing,
compilation), the timed calls alternate (P M M P P M ...) so a drift in
machine load hits both; each call runs --steps steps. A torch call is timed
whole, per-call set-up included (the pipeline pays it once per epoch). A Keras
call is timed from the end of its first step to the end of its last, read at
Keras' end-of-step callback in both variants (the pipeline's stop poll, a
timing callback for the minimal `fit`): the end of every `fit` destroys
Keras' tf.data iterator, which waits for the tf.data autotuner's next wake-up
(whole calls ended about 2.6 or 10.3 s after it started), so a whole call measured
that wait, not the step. Each repeat is a pair of adjacent calls, one of each
variant; the ratio is the median over the pairs of pipeline throughput /
minimal throughput, so that a change of machine speed between pairs (this VM's
speed shifts by 10-20 % for seconds at a time) cancels within each pair. The
ratio of the two medians is written beside it. The target is >= 0.95 in every
mode.

    python bench/pipeline_vs_minimal.py                        # convnet, fashion_mnist
    python bench/pipeline_vs_minimal.py --model mlp experiment=smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from fwbench.bench.grid import MODES
from fwbench.runtime import cpu_model, write_json_atomic

TARGET_RATIO = 0.95
DEFAULT_OUT = ROOT / "results" / "bench_overhead" / "pipeline_vs_minimal.json"
DEFAULT_STEPS = 40
# Five calls per variant did not resolve a 5 % question on this 2-core VM (tf eager: 0.94 with 5, 1.06 with 9).
DEFAULT_REPEATS = 9
DEFAULT_THREADS = 2
EXIT_BELOW_TARGET = 1
# Alternation P M M P: each pair in turn starts with the other variant.
ORDER = (("pipeline", "minimal"), ("minimal", "pipeline"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per timed call")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed calls of each variant")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs=2, metavar=("FRAMEWORK", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (experiment=smoke, trainer.batch_size=64, ...)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one mode, in its own process


class StepEnds:
    """Clock reads at the end of each training step, for the Keras variants' steady state."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def mark(self) -> None:
        self.times.append(time.perf_counter())

    def steady_seconds(self) -> float:
        """From the end of the first step to the end of the last."""
        return self.times[-1] - self.times[0]


def minimal_keras(model, x, y, batch_size: int):
    """The Keras user's loop: fit on in-memory arrays, plus a callback that reads the clock per step."""
    import keras

    class MarkStepEnds(keras.callbacks.Callback):
        def __init__(self, ends: StepEnds) -> None:
            super().__init__()
            self.ends = ends

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.ends.mark()

    return lambda ends: model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                                  callbacks=[MarkStepEnds(ends)])


def minimal_torch(model, optimizer, x, y, batch_size: int, device):
    """The PyTorch user's loop over pre-loaded tensors."""
    import torch
    import torch.nn.functional as F

    from fwbench.frameworks.torch import to_torch

    inputs, labels = to_torch(x, device), torch.from_numpy(y).to(device)

    def run(ends=None):
        model.train()
        for start in range(0, len(inputs), batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs[start:start + batch_size]), labels[start:start + batch_size])
            loss.backward()
            optimizer.step()
        return float(loss)  # one sync at the end, as the pipeline's loop does

    return run


def timed_call(run, sync, keras_steady: bool) -> float:
    """Seconds of one call: Keras from the end of its first step to the end of its last, torch whole."""
    ends = StepEnds()
    if keras_steady:
        run(ends)
        return ends.steady_seconds()
    start = time.perf_counter()
    run(ends)
    sync()
    return time.perf_counter() - start


def measure_mode(framework: str, mode: str, args: argparse.Namespace) -> dict:
    from fwbench.bench.run import bench_inputs, load_backend
    from fwbench.config import compose_config
    from fwbench.training.loop import SigtermFlag
    from fwbench.training.run import make_adapter

    cfg = compose_config(ROOT / "config", [f"framework={framework}", f"model={args.model}",
                                           f"threads={args.threads}", *args.overrides])
    backend = load_backend(framework)
    backend.prepare_process()
    backend.configure(cfg.threads, cfg.seed, tf32=cfg.bench.tf32, deterministic=cfg.bench.deterministic)
    backend.before_build(cfg.bench.precision)
    x, y, order, num_classes = bench_inputs(cfg, args.steps)
    adapter = make_adapter(cfg, x.shape[1:], num_classes)
    backend.apply_mode(adapter, mode, cfg.bench.precision)
    batch_size = cfg.trainer.batch_size
    ordered_x, ordered_y = x[order], y[order]
    if framework == "tf":
        minimal = minimal_keras(adapter.model, ordered_x, ordered_y, batch_size)
    else:
        minimal = minimal_torch(adapter.model, adapter.optimizer, ordered_x, ordered_y, batch_size,
                                adapter.torch_device)
    sync = backend.sync()

    keras_steady = framework == "tf"

    def pipeline(ends: StepEnds):
        # The adapter polls should_stop once per step: Keras after each step, as the bench's clock reads it.
        def should_stop() -> bool:
            if keras_steady:
                ends.mark()
            return sigterm.raised

        return adapter.train_epoch(x, y, order, should_stop)

    with SigtermFlag() as sigterm:
        variants = {"pipeline": pipeline, "minimal": minimal}
        for run in variants.values():  # untimed: tracing and compilation
            run(StepEnds())
        seconds = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name in ORDER[repeat % len(ORDER)]:
                seconds[name].append(timed_call(variants[name], sync, keras_steady))
    samples = (args.steps - 1 if keras_steady else args.steps) * batch_size
    throughput = {name: [samples / s for s in values] for name, values in seconds.items()}
    pairs = pair_ratios(throughput["pipeline"], throughput["minimal"])
    ratio = statistics.median(pairs)
    medians = {name: statistics.median(values) for name, values in throughput.items()}
    return {
        "framework": framework,
        "mode": mode,
        "model": args.model,
        "device": adapter.device,
        "batch_size": batch_size,
        "steps_per_call": args.steps,
        "timed": "end of first step to end of last step" if keras_steady else "whole call",
        "pipeline_samples_per_s": throughput["pipeline"],
        "minimal_samples_per_s": throughput["minimal"],
        "pipeline_median": medians["pipeline"],
        "minimal_median": medians["minimal"],
        "pair_ratios": pairs,
        "ratio": ratio,
        "ratio_of_medians": medians["pipeline"] / medians["minimal"],
        "meets_target": ratio >= TARGET_RATIO,
    }


def pair_ratios(pipeline: list[float], minimal: list[float]) -> list[float]:
    """Pipeline / minimal throughput per repeat, whose two calls ran one after the other."""
    if len(pipeline) != len(minimal) or not pipeline:
        raise ValueError(f"need one pipeline and one minimal call per repeat, got {len(pipeline)} and {len(minimal)}")
    return [p / m for p, m in zip(pipeline, minimal)]


# ---------------------------------------------------------------- all modes


def run_all(args: argparse.Namespace) -> int:
    load_start = os.getloadavg()[0]
    results = []
    for framework, modes in MODES.items():
        for mode in modes:
            # A process per mode: thread pools, XLA and inductor state start fresh, and
            # TensorFlow and torch never share a process.
            command = [sys.executable, __file__, "--only", framework, mode, "--model", args.model,
                       "--steps", str(args.steps), "--repeats", str(args.repeats),
                       "--threads", str(args.threads), *args.overrides]
            completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if completed.returncode != 0:
                print(completed.stderr[-3000:], file=sys.stderr)
                print(f"fwbench: error: {framework}/{mode} failed (exit {completed.returncode})", file=sys.stderr)
                return completed.returncode
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{framework:6s} {mode:8s} pipeline {result['pipeline_median']:9.0f}  "
                  f"minimal {result['minimal_median']:9.0f} samples/s  ratio {result['ratio']:.3f} "
                  f"(ratio of medians {result['ratio_of_medians']:.3f})"
                  f"{'' if result['meets_target'] else '  BELOW ' + str(TARGET_RATIO)}", flush=True)
    payload = {
        "target_ratio": TARGET_RATIO,
        "all_meet_target": all(r["meets_target"] for r in results),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg()[0],
        "overrides": args.overrides,
        "results": results,
    }
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return 0 if payload["all_meet_target"] else EXIT_BELOW_TARGET


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.only:
        print(json.dumps(measure_mode(*args.only, args)))
        return 0
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
