"""The bench: warm-up outside the timed windows, threads applied, the table's schema,
one-line refusal of a mode a framework lacks, timed jobs alone, the GPU script's paths."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
# Before TensorFlow: torch._dynamo loads triton, whose bundled LLVM crashes the process
# when TensorFlow's is already loaded (torch.optim imports it at the first step).
import torch._dynamo  # noqa: F401
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, PROJECT_ROOT, model_config, redirected_paths, run_script, run_snakemake
from collections import Counter

from fwbench.bench.grid import (
    MODES,
    bench_frameworks,
    bench_grid,
    bench_schedule,
    check_mode,
    control_variants,
    scheduled_job,
    window_steps,
)
from fwbench.bench.outputs import RESULT_COLUMNS, job_rows_path
from fwbench.bench.table import check_no_overlap, check_columns, process_means, summarize
from fwbench.bench.timing import StepClock, TrainingPlan, throughput_cv, time_calls
from fwbench.config import compose_config, validate_config
from fwbench.errors import ConfigError, DataError
from fwbench.frameworks import registry
from fwbench.frameworks.registry import FRAMEWORKS

POLL_LAG = {name: spec.poll_lag for name, spec in FRAMEWORKS.items()}  # where each adapter's stop poll falls
# The arms whose adapters this process can import (the Keras arms on torch and JAX need their own;
# their adapter is the tf arm's Keras adapter).
IN_PROCESS = sorted(registry.sharing_a_process(FRAMEWORKS))

# Small enough to run in seconds, with every phase present.
TINY_BENCH = ["bench=smoke", "bench.latency_calls=5", "trainer.eval_batch_size=50"]
# Columns the report reads (src/fwbench/reporting); renaming one must fail here first.
REPORT_COLUMNS = (
    "framework", "model", "mode", "replicate", "window", "windows", "schedule_position", "schedule_block",
    "device", "optimizer", "train_samples_per_s", "peak_anon_train_mb", "rss_anon_baseline_mb",
    "rss_file_after_train_mb", "background_cpu_share", "steal_cpu_share",
    "first_step_s", "infer_latency_p50_ms", "infer_latency_p95_ms", "infer_latency_p99_ms",
    "infer_samples_per_s", "peak_rss_train_mb", "peak_device_train_mb", "parameter_count",
    "flops_per_sample", "mlflow_run_id",
)


# ---------------------------------------------------------------- timing windows


class FakeLoop:
    """A training loop that polls should_stop once per step, as the adapters do, on a fake clock."""

    def __init__(self, poll_lag: int, step_seconds):
        self.now = 0.0
        self.poll_lag = poll_lag
        self.step_seconds = step_seconds
        self.steps_run = 0

    def clock(self) -> float:
        return self.now

    def train_epoch(self, steps: int, should_stop) -> None:
        for step in range(steps):
            if self.poll_lag == 1 and should_stop():  # torch: polls before each step
                break
            self.now += self.step_seconds(step)
            self.steps_run += 1
            if self.poll_lag == 0 and should_stop():  # Keras: polls after each step
                break


def warm_then_steady(first_step: float, warmup_step: float, steady_step: float, warmup: int):
    """Step 0 (compilation) is slow, the other warm-up steps slower than the rest."""
    return lambda step: first_step if step == 0 else warmup_step if step < warmup else steady_step


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_windows_exclude_warmup_and_first_step(framework):
    warmup, window, windows, steady = 3, 4, 5, 0.25
    plan = TrainingPlan(warmup, window, windows, POLL_LAG[framework])
    loop = FakeLoop(POLL_LAG[framework], warm_then_steady(100.0, 10.0, steady, warmup))

    def bookkeeping(poll):  # memory reads at boundaries cost time, but outside every window
        loop.now += 7.0

    clock = StepClock(plan, clock=loop.clock, on_boundary=bookkeeping)
    loop.train_epoch(plan.steps, clock)
    assert loop.steps_run == warmup + windows * window  # stopped at the last window's end
    assert clock.window_seconds() == pytest.approx([window * steady] * windows)
    assert clock.first_step_seconds(called_at=0.0) == pytest.approx(100.0)


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_every_window_is_kept_however_much_they_disagree(framework):
    """Windows that drift by 20 % each are all reported: none is dropped for disagreeing."""
    warmup, window, windows = 2, 4, 5
    plan = TrainingPlan(warmup, window, windows, POLL_LAG[framework])
    loop = FakeLoop(POLL_LAG[framework], lambda step: 5.0 if step < warmup else 0.25 * 1.2 ** ((step - warmup) // window))
    clock = StepClock(plan, clock=loop.clock)
    loop.train_epoch(plan.steps, clock)
    assert clock.window_seconds() == pytest.approx([window * 0.25 * 1.2 ** k for k in range(windows)])


@pytest.mark.parametrize("framework", ["tf", "torch"])
def test_memory_phase_follows_the_last_window_and_is_never_timed(framework):
    """The sampler starts at the poll that closes the last window and stops memory_steps steps later."""
    warmup, window, windows, memory_steps = 2, 3, 2, 4
    plan = TrainingPlan(warmup, window, windows, POLL_LAG[framework], memory_steps=memory_steps)
    loop = FakeLoop(POLL_LAG[framework], lambda step: 1.0)
    phases = []

    def on_boundary(poll):
        if poll == plan.memory_polls[0]:
            phases.append(("memory starts", loop.steps_run))
        if poll == plan.memory_polls[1]:
            phases.append(("memory ends", loop.steps_run))
        loop.now += 100.0  # a sampler starting or stopping costs time, outside every window

    clock = StepClock(plan, clock=loop.clock, on_boundary=on_boundary)
    loop.train_epoch(plan.steps, clock)
    last_window_end = warmup + windows * window
    assert phases == [("memory starts", last_window_end), ("memory ends", last_window_end + memory_steps)]
    assert loop.steps_run == last_window_end + memory_steps
    assert clock.window_seconds() == pytest.approx([window * 1.0] * windows)


def test_plan_counts_steps_and_windows():
    plan = TrainingPlan(warmup_steps=3, window_steps=10, windows=5, poll_lag=1)
    assert plan.steps == 3 + 5 * 10 + 1
    assert plan.window_polls(0) == (3, 13)
    assert plan.window_polls(4) == (43, 53)
    assert [plan.window_closed_by(poll) for poll in (3, 12, 13, 23, 53, 63)] == [None, None, 0, 1, 4, None]
    assert plan.memory_polls is None and plan.final_poll == 53
    with_memory = TrainingPlan(warmup_steps=3, window_steps=10, windows=5, poll_lag=1, memory_steps=7)
    assert with_memory.steps == 3 + 5 * 10 + 7 + 1
    assert with_memory.memory_polls == (53, 60) and with_memory.final_poll == 60
    with pytest.raises(ValueError):
        TrainingPlan(warmup_steps=0, window_steps=10, windows=5, poll_lag=0)
    with pytest.raises(ValueError):
        TrainingPlan(warmup_steps=3, window_steps=10, windows=0, poll_lag=0)


def test_throughput_cv_is_the_summarys_cv():
    seconds = [1.0, 1.1, 0.9, 1.05]
    rates = 1 / np.array(seconds)
    assert throughput_cv(seconds) == pytest.approx(rates.std(ddof=1) / rates.mean())


def test_clock_reports_a_loop_that_polls_too_rarely():
    plan = TrainingPlan(1, 2, 2, poll_lag=0)
    clock = StepClock(plan)
    for _ in range(plan.steps - 2):
        clock()
    with pytest.raises(RuntimeError, match="once per step"):
        clock.window_seconds()


def test_time_calls_syncs_before_each_clock_read():
    events = []
    ticks = iter(range(100))
    durations = time_calls(lambda: events.append("call"), 3, clock=lambda: next(ticks),
                           sync=lambda: events.append("sync"))
    assert events == ["call", "sync"] * 3
    assert durations == [1, 1, 1]


def tiny_trainer():
    return OmegaConf.create({"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "adam_epsilon": 1e-7,
                             "batch_size": 8, "epochs": 1, "eval_batch_size": 8})


def steps_done_torch(adapter) -> int:
    states = list(adapter.optimizer.state.values())
    return int(states[0]["step"]) if states else 0


# How many optimizer steps each adapter has taken (what the poll tests check the polls against).
STEPS_DONE = {
    "tf": lambda adapter: int(np.asarray(adapter.model.optimizer.iterations)),
    "tf_native": lambda adapter: int(adapter.optimizer.iterations.numpy()),
    "torch": steps_done_torch,
    "jax": lambda adapter: adapter.step_count,
}


def tiny_adapter_and_data(framework: str, steps: int):
    """A pipeline adapter on the linear model, its steps counter, and `steps` batches of random data."""
    trainer = tiny_trainer()
    adapter = registry.load(framework).Adapter(model_config("linear"), (28, 28, 1), 10, trainer)
    rng = np.random.default_rng(0)
    x = rng.random((steps * trainer.batch_size, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    return adapter, lambda: STEPS_DONE[framework](adapter), x, y


@pytest.mark.parametrize("framework", IN_PROCESS)
def test_adapters_poll_once_per_step_with_the_declared_lag(framework):
    """POLL_LAG is what the pipeline's adapters do: poll i comes after step i - lag."""
    steps = 5
    adapter, steps_done, x, y = tiny_adapter_and_data(framework, steps)
    seen = []

    def poll():
        seen.append(steps_done())
        return False

    adapter.train_epoch(x, y, np.arange(len(x)), poll)
    lag = POLL_LAG[framework]
    assert seen == [poll_index + 1 - lag for poll_index in range(steps)]


@pytest.mark.parametrize("framework", IN_PROCESS)
def test_adapters_stop_at_the_poll_that_asks(framework):
    """The StepClock ends training when it has its windows: no step runs after that poll."""
    stop_at = 2
    adapter, steps_done, x, y = tiny_adapter_and_data(framework, steps=6)
    polls = []

    def poll():
        polls.append(len(polls))
        return polls[-1] >= stop_at

    adapter.train_epoch(x, y, np.arange(len(x)), poll)
    assert len(polls) == stop_at + 1
    assert steps_done() == stop_at + 1 - POLL_LAG[framework]


def test_background_cpu_share_is_other_processes_time_over_the_machine(monkeypatch):
    from fwbench.bench import contention

    readings = {"machine": 100.0, "own": 10.0, "wall": 50.0}
    monkeypatch.setattr(contention, "_machine_busy_seconds", lambda: readings["machine"])
    monkeypatch.setattr(contention, "_own_cpu_seconds", lambda: readings["own"])
    monkeypatch.setattr(contention.time, "perf_counter", lambda: readings["wall"])
    monkeypatch.setattr(contention.os, "cpu_count", lambda: 2)
    background = contention.BackgroundCpu()
    # 10 s of wall time on 2 CPUs: the machine was busy 16 CPU-s, this process 6 of them.
    readings.update(machine=116.0, own=16.0, wall=60.0)
    assert background.share() == pytest.approx(10.0 / 20.0)


def test_steal_share_is_the_hypervisors_time_over_the_machine(monkeypatch, tmp_path):
    from fwbench.bench import contention

    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks.
    ticks_per_s = contention.os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  1000 0 100 5000 0 0 0 {2 * ticks_per_s} 0 0\n")
    monkeypatch.setattr(contention, "PROC_STAT", stat)
    monkeypatch.setattr(contention, "_own_cpu_seconds", lambda: 0.0)
    wall = {"now": 50.0}
    monkeypatch.setattr(contention.time, "perf_counter", lambda: wall["now"])
    monkeypatch.setattr(contention.os, "cpu_count", lambda: 2)
    background = contention.BackgroundCpu()
    # 10 s of wall time on 2 CPUs, 3 s of it stolen: 15 % of the machine, all of it inside `share`.
    stat.write_text(f"cpu  1000 0 100 5000 0 0 0 {5 * ticks_per_s} 0 0\n")
    wall["now"] = 60.0
    assert background.steal_share() == pytest.approx(3.0 / 20.0)
    assert background.share() == pytest.approx(background.steal_share())  # the only busy time here


# Uses 0.5 s of CPU time (process time, whatever the wall clock does).
BURN_HALF_A_CPU_SECOND = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
# Burns it, then says so on the file descriptor given as its argument and waits.
BURN_THEN_WAIT = BURN_HALF_A_CPU_SECOND + "import os, sys\nos.write(int(sys.argv[1]), b'burnt')\ntime.sleep(30)"


def start_burning(detached: bool = False) -> tuple[int, int]:
    """Start BURN_THEN_WAIT as this process's child, or detached (its shell exits, so it is
    nobody's child here); returns its pid and the pipe on which it says it has burnt."""
    read_end, write_end = os.pipe()
    if detached:
        started = subprocess.run(["sh", "-c", '"$1" -c "$0" "$2" >/dev/null 2>&1 & echo $!', BURN_THEN_WAIT,
                                  sys.executable, str(write_end)],
                                 pass_fds=(write_end,), capture_output=True, text=True, check=True)
        pid = int(started.stdout)
    else:
        pid = subprocess.Popen([sys.executable, "-c", BURN_THEN_WAIT, str(write_end)], pass_fds=(write_end,)).pid
    os.close(write_end)
    return pid, read_end


def wait_until_burnt(read_end: int) -> None:
    """Blocks until the process has burnt its CPU time (EOF, and a failed assertion, if it died)."""
    try:
        assert os.read(read_end, 16) == b"burnt"
    finally:
        os.close(read_end)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # detached: not ours to reap
        pass


def test_a_child_process_cpu_time_counts_as_the_jobs_own():
    """torch.compile's compile workers are the job's work: a busy child is not background."""
    from fwbench.bench import contention

    before = contention._own_cpu_seconds()
    child, burnt = start_burning()
    try:
        wait_until_burnt(burnt)
        assert contention._own_cpu_seconds() - before >= 0.4  # counted while the child still runs
    finally:
        stop(child)


def test_a_grandchild_that_ended_counts_as_the_jobs_own():
    """An inductor compile worker that ended was reaped by the compile pool, the job's child."""
    from fwbench.bench import contention

    reaper = (f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {BURN_HALF_A_CPU_SECOND!r}])\n"
              "print('reaped', flush=True)\ntime.sleep(30)")
    before = contention._own_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", reaper], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "reaped"  # the grandchild has ended
        assert contention._own_cpu_seconds() - before >= 0.4
    finally:
        child.kill()
        child.wait()


def test_busiest_ranks_cpu_time_used_between_readings():
    from fwbench.bench.contention import busiest, describe

    before = {(10, 1.0): ("snakemake", 5.0), (11, 1.0): ("kworker/0:1-events", 1.0), (12, 1.0): ("python", 9.0),
              (13, 1.0): ("sshd", 2.0)}
    after = {(10, 1.0): ("snakemake", 8.0), (11, 1.0): ("kworker/0:1-mm_percpu_wq", 1.5), (12, 7.0): ("bash", 0.7),
             (13, 1.0): ("sshd", 2.0), (14, 7.0): ("gzip", 2.0)}
    # pid 12 was reused (a later start): all its time is new; pid 11 renamed itself; pid 13 used nothing.
    assert busiest(before, after, count=3) == [("snakemake", 10, 3.0), ("gzip", 14, 2.0), ("bash", 12, 0.7)]
    assert busiest(before, after, count=5)[3] == ("kworker/0:1-mm_percpu_wq", 11, 0.5)
    assert describe(busiest(before, after, count=1)) == "snakemake (pid 10) 3.00 s"
    assert describe([]) == ""


def test_busiest_names_a_busy_process_outside_the_job_and_not_the_jobs_child():
    """A detached process (re-parented away from the job) is background; the job's child is not."""
    from fwbench.bench import contention

    background = contention.BackgroundCpu()
    child, child_burnt = start_burning()
    detached, detached_burnt = start_burning(detached=True)
    try:
        wait_until_burnt(child_burnt)
        wait_until_burnt(detached_burnt)
        seen = {pid: seconds for _, pid, seconds in background.busiest(count=50)}
        assert seen.get(detached, 0.0) >= 0.4
        assert child not in seen
    finally:
        stop(child)
        stop(detached)


def load_pipeline_vs_minimal():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pipeline_vs_minimal", PROJECT_ROOT / "bench/pipeline_vs_minimal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_vs_minimal_compares_the_two_calls_of_each_repeat():
    """A shift of machine speed between repeats cancels within each pair of adjacent calls."""
    script = load_pipeline_vs_minimal()
    # Repeats 2 and 3 ran on a machine 20 % slower; the pipeline is 2 % slower than the minimal loop throughout.
    minimal = [1000.0, 800.0, 800.0, 1000.0]
    pipeline = [980.0, 784.0, 784.0, 980.0]
    assert script.pair_ratios(pipeline, minimal) == pytest.approx([0.98] * 4)
    with pytest.raises(ValueError, match="one pipeline and one minimal call per repeat"):
        script.pair_ratios(pipeline, minimal[:3])


def test_pipeline_vs_minimal_measures_a_mode(smoke_data):
    """The script's per-mode run: real calls of both variants, paired, on the smoke data."""
    repeats = 2
    result = subprocess.run(
        [sys.executable, "bench/pipeline_vs_minimal.py", "--only", "torch", "eager", "--model", "linear",
         "--steps", "3", "--repeats", str(repeats), "--threads", "1", "experiment=smoke",
         *redirected_paths(smoke_data)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert (measured["framework"], measured["mode"], measured["timed"]) == ("torch", "eager", "whole call")
    assert len(measured["pipeline_samples_per_s"]) == len(measured["minimal_samples_per_s"]) == repeats
    pairs = [p / m for p, m in zip(measured["pipeline_samples_per_s"], measured["minimal_samples_per_s"])]
    assert measured["pair_ratios"] == pytest.approx(pairs)
    assert measured["ratio"] == pytest.approx(float(np.median(pairs)))
    assert measured["meets_target"] == (measured["ratio"] >= 0.95)


# ---------------------------------------------------------------- config and refusal


def test_mode_the_framework_lacks_is_one_line():
    with pytest.raises(ConfigError) as error:
        check_mode("torch", "xla")
    message = str(error.value)
    assert "\n" not in message
    assert "'xla'" in message and "eager, compile" in message


def test_refused_imports_fail_only_inside_the_block():
    from fwbench.runtime import imports_refused

    assert "tabnanny" not in sys.modules  # a stdlib module nothing here loads
    with imports_refused(("tabnanny", "csv")):
        with pytest.raises(ImportError):
            import tabnanny  # noqa: F401
        import csv as already_loaded  # a module loaded before the block is left alone
    assert already_loaded is csv
    import tabnanny  # noqa: F401, F811 - importable again after the block


def test_tf_backend_loads_without_keras_optional_integrations():
    """Keras imports matplotlib, scikit-learn and pandas when installed; a bench job keeps them out
    (seconds of import per TF job, and their memory in the job's RSS) and can import them afterwards."""
    code = (
        "import sys\n"
        "from fwbench.bench.run import load_backend\n"
        "load_backend('tf')\n"
        "print(sorted(name for name in ('matplotlib', 'sklearn', 'pandas') if name in sys.modules))\n"
        "import pandas\n"
        "print('pandas importable')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-2:] == ["[]", "pandas importable"]


def test_bench_job_refuses_unknown_mode_before_any_work(monkeypatch, tmp_path):
    from fwbench.bench import run

    def must_not_load(framework):
        raise AssertionError("the framework was imported before the mode was checked")

    monkeypatch.setattr(run, "load_backend", must_not_load)
    cfg = compose_config(CONFIG_DIR, ["framework=torch", "model=linear", "bench.mode=xla",
                                      *redirected_paths(tmp_path)])
    with pytest.raises(ConfigError, match="accepted are eager, compile"):
        run.bench_variant(cfg)
    assert not (tmp_path / "results").exists()


def test_bench_script_refuses_unknown_mode_with_one_line():
    result = run_script("bench", "framework=torch", "model=linear", "bench.mode=xla", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fwbench: error: bench mode 'xla' does not exist for framework=torch: accepted are eager, compile"
    ]


@pytest.mark.parametrize("override, fragment", [
    ("bench.precision=fp16", "bench.precision='fp16'"),
    ("bench.modes.tf=[graph,compile]", "'compile' does not exist for framework=tf"),
    ("bench.windows=0", "bench.windows=0 is invalid: accepted is an integer > 0"),
    ("bench.replicates=0", "bench.replicates=0 is invalid: accepted is an integer > 0"),
    ("bench.replicates=two", "bench.replicates='two'"),
    ("bench.replicate=-1", "bench.replicate=-1 is invalid: accepted is an integer >= 0"),
    ("bench.schedule_seed=1.5", "bench.schedule_seed=1.5 is invalid"),
    ("bench.control_model=resnet", "bench.control_model='resnet' is invalid: accepted are"),
    ("+bench.model_window_steps.convnet.torch.xla=20", "'xla' does not exist for framework=torch"),
    ("bench.model_window_steps.convnet.tf.graph=0", "bench.model_window_steps.convnet.tf.graph=0"),
    ("+bench.model_window_steps.convnet.mxnet={eager: 5}", "bench.model_window_steps.convnet.mxnet="),
])
def test_bad_bench_config_is_refused(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        compose_config(CONFIG_DIR, [override])


def test_window_steps_per_model_or_per_framework_and_mode():
    cfg = compose_config(CONFIG_DIR, ["experiment=default", "bench.window_steps=7"])
    # Set whole, not merged into the defaults' own per-model counts.
    cfg.bench.model_window_steps = {"mlp": 20, "lenet": {"tf": {"graph": 40}, "torch": {"eager": 30}}}
    validate_config(cfg, CONFIG_DIR)
    assert window_steps(cfg, "tf", "mlp", "eager") == 20
    assert window_steps(cfg, "tf", "lenet", "graph") == 40
    assert window_steps(cfg, "torch", "lenet", "eager") == 30
    # What the mapping leaves out takes bench.window_steps.
    assert window_steps(cfg, "tf", "lenet", "xla") == 7
    assert window_steps(cfg, "torch", "lenet", "compile") == 7


@pytest.mark.parametrize("experiment", ["default", "arms", "sweep"])
def test_every_default_job_plans_at_most_one_epoch(experiment):
    """The window steps are capped so that no bench job cycles its data (config/bench/default.yaml)."""
    cfg = compose_config(CONFIG_DIR, [f"experiment={experiment}"])
    # The training split is what preprocessing leaves after taking the validation split.
    for framework, model, mode, batch_size, _ in bench_grid(cfg):
        steps_per_epoch = (cfg.dataset.train_count - cfg.dataset.val_size) // batch_size
        steps = window_steps(cfg, framework, model, mode, batch_size)
        plan = TrainingPlan(cfg.bench.warmup_steps, steps, cfg.bench.windows, poll_lag=1, memory_steps=steps)
        assert plan.steps <= steps_per_epoch, (framework, model, mode, batch_size, plan.steps)


def test_grid_is_frameworks_by_models_by_each_frameworks_modes():
    cfg = compose_config(CONFIG_DIR, ["experiment=default"])
    grid = bench_grid(cfg)
    # default benches four arms and trains two of them.
    assert bench_frameworks(cfg) == ["tf", "tf_native", "torch", "jax"] != list(cfg.experiment.frameworks)
    assert len(grid) == len(cfg.experiment.models) * sum(len(MODES[f]) for f in bench_frameworks(cfg)) + 2 * 2
    # The two large models only in bench.model_modes: tf's graph and torch's eager.
    assert {(f, m) for f, model, m, *_ in grid if model in ("resnet18", "transformer")} == {("tf", "graph"),
                                                                                            ("torch", "eager")}
    # One setting: the trainer's batch size at bench.threads' one count.
    assert ("torch", "convnet", "compile", 128, 2) in grid and ("torch", "convnet", "xla", 128, 2) not in grid


# ---------------------------------------------------------------- the schedule of processes


def test_schedule_runs_every_variant_in_every_block_once_in_a_shuffled_order():
    cfg = compose_config(CONFIG_DIR, ["experiment=arms"])
    grid, schedule = bench_grid(cfg), bench_schedule(cfg)
    controls = set(control_variants(cfg))
    assert controls == {("tf", "convnet", "graph", 128, 2), ("tf_native", "convnet", "graph", 128, 2),
                        ("torch", "convnet", "eager", 128, 2), ("jax", "convnet", "jit", 128, 2)}
    replicates = cfg.bench.replicates
    # Every variant R processes; each control an even number (its two A/A arms equal).
    counts = Counter(job.variant for job in schedule)
    assert {v: counts[v] for v in grid if v not in controls} == {v: replicates for v in grid if v not in controls}
    assert {counts[v] for v in controls} == {replicates + replicates % 2}
    assert [job.position for job in schedule] == list(range(len(schedule)))
    for block in range(replicates):
        members = [job for job in schedule if job.block == block]
        assert sorted(job.variant for job in members) == sorted(grid)  # balanced: each variant once
        assert {job.replicate for job in members} == {block}
    orders = [[job.variant for job in schedule if job.block == block] for block in range(replicates)]
    assert orders[0] != grid and len({tuple(order) for order in orders}) == replicates  # shuffled, per block
    # Every framework spreads through every block, not one after the other.
    first_half = [job.framework for job in schedule if job.block == 0][: len(grid) // 2]
    assert set(first_half) == set(bench_frameworks(cfg))


def test_schedule_is_seeded():
    same = [bench_schedule(compose_config(CONFIG_DIR, ["experiment=default"])) for _ in range(2)]
    other = bench_schedule(compose_config(CONFIG_DIR, ["experiment=default", "bench.schedule_seed=1"]))
    assert same[0] == same[1]
    assert [job.variant for job in other] != [job.variant for job in same[0]]


def test_a_replicate_outside_the_schedule_is_one_line():
    cfg = compose_config(CONFIG_DIR, ["experiment=default"])
    with pytest.raises(ConfigError, match=re.escape("bench.replicate=3 of tf/mlp/eager/128/2 is not in the bench "
                                                    "schedule: accepted are 0 to 2")):
        scheduled_job(cfg, ("tf", "mlp", "eager", 128, 2), 3)
    assert scheduled_job(cfg, ("tf", "convnet", "graph", 128, 2), 3).replicate == 3  # a control's fourth process
    with pytest.raises(ConfigError, match=re.escape("tf/mlp/eager/64/2 (framework/model/mode/batch size/threads) "
                                                    "is not a variant of the bench grid")):
        scheduled_job(cfg, ("tf", "mlp", "eager", 64, 2), 0)


def test_snakemake_runs_the_bench_jobs_in_the_schedules_order(tmp_path):
    """Dry run: each bench job takes the previous job's rows as input, so the DAG's order is the schedule's."""
    overrides = " ".join(redirected_paths(tmp_path))
    result = run_snakemake("-n", "--config", "experiment=smoke", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    previous_of = {}
    for job in result.stdout.split("\nrule ")[1:]:
        if not job.startswith("bench:"):
            continue
        fields = {line.strip().split(":", 1)[0]: line.split(":", 1)[1] for line in job.splitlines()[1:]
                  if line.strip().startswith(("input:", "output:"))}
        rows = next(path.strip() for path in fields["output"].split(",") if path.strip().endswith(".csv"))
        earlier = [path.strip() for path in fields["input"].split(",") if path.strip().endswith(".csv")]
        previous_of[rows] = earlier
    cfg = compose_config(CONFIG_DIR, ["experiment=smoke", *redirected_paths(tmp_path)])
    in_order = [str(job_rows_path(cfg, *job.variant, job.replicate)) for job in bench_schedule(cfg)]
    variants, controls = len(bench_grid(cfg)), len(control_variants(cfg))
    assert len(previous_of) == len(in_order) == variants + controls  # every variant once, the controls twice
    assert previous_of[in_order[0]] == []
    for earlier, later in zip(in_order, in_order[1:]):
        assert previous_of[later] == [earlier]


# ---------------------------------------------------------------- a real job: threads, schema


def read_csv_rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_bench_jobs_hold_a_whole_epoch_in_order_whatever_their_windows_plan(smoke_data):
    """Peak RSS must not depend on a mode's window steps: every job gets at least one epoch,
    already in the epoch's order (so no adapter copies it again); a plan longer than an epoch
    cycles through the split."""
    from fwbench.bench.run import BENCH_EPOCH, bench_inputs
    from fwbench.config import processed_dir
    from fwbench.data.preprocess import load_split
    from fwbench.training.loop import epoch_order

    cfg = compose_config(CONFIG_DIR, ["experiment=smoke", *redirected_paths(smoke_data)])
    x_train, y_train = load_split(processed_dir(cfg), "train")
    short_x, short_y, short_order, _ = bench_inputs(cfg, steps=2, whole_epoch=True)
    assert short_order is None
    epoch = epoch_order(cfg.seed, BENCH_EPOCH, len(x_train))
    np.testing.assert_array_equal(short_x, x_train[epoch])
    np.testing.assert_array_equal(short_y, y_train[epoch])
    epoch_steps = -(-len(x_train) // cfg.trainer.batch_size)
    long_x, _, _, _ = bench_inputs(cfg, steps=3 * epoch_steps, whole_epoch=True)
    assert len(long_x) == 3 * epoch_steps * cfg.trainer.batch_size
    np.testing.assert_array_equal(long_x[len(x_train):2 * len(x_train)], x_train[epoch])
    cut_x, _, cut_order, _ = bench_inputs(cfg, steps=2)
    assert len(cut_x) == len(cut_order) == 2 * cfg.trainer.batch_size


@pytest.mark.parametrize("framework", IN_PROCESS)
def test_adapters_train_on_arrays_already_in_order(framework):
    """order None trains on the arrays as given: the same steps as an identity order."""
    steps = 3
    adapter, steps_done, x, y = tiny_adapter_and_data(framework, steps)
    adapter.train_epoch(x, y, None, lambda: False)
    assert steps_done() == steps


def test_torch_bench_job_applies_threads_and_writes_the_schema(smoke_data):
    import torch

    from fwbench.bench.run import bench_variant

    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2  # differs from the process's count, so the test can fail
    # mlp is the smoke bench's control model: its torch eager variant has a second replicate.
    cfg = compose_config(CONFIG_DIR, ["experiment=smoke", "framework=torch", "model=mlp", "bench.replicate=1",
                                      f"threads={threads}", f"bench.threads=[{threads}]", *TINY_BENCH,
                                      *redirected_paths(smoke_data)])
    try:
        rows = bench_variant(cfg)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    columns, written = read_csv_rows(smoke_data / f"results/smoke/digits/bench/torch/mlp/eager/b64-t{threads}/r1.csv")
    assert tuple(columns) == RESULT_COLUMNS
    assert set(REPORT_COLUMNS) <= set(columns)
    assert len(written) == len(rows) == cfg.bench.windows
    assert [int(row["window"]) for row in written] == list(range(cfg.bench.windows))
    for row in written:
        assert int(row["intra_op_threads"]) == threads
        assert (row["mode"], row["device"], row["replicate"]) == ("eager", "cpu", "1")
        assert int(row["schedule_position"]) == scheduled_job(cfg, ("torch", "mlp", "eager", 64, threads), 1).position
        assert float(row["train_samples_per_s"]) > 0
        assert float(row["first_step_s"]) > 0
        assert float(row["infer_latency_p50_ms"]) <= float(row["infer_latency_p99_ms"])
        # torch's shared libraries alone are over 100 MB resident; they are in the total, not the anonymous peak.
        assert 100 < float(row["rss_file_after_train_mb"]) < float(row["peak_rss_train_mb"])
        assert 0 < float(row["peak_anon_train_mb"]) < float(row["peak_rss_train_mb"]) - 100
        assert int(row["memory_phase_samples"]) >= 2


@pytest.mark.slow
def test_tf_bench_job_applies_threads(smoke_data):
    result = run_script("bench", "experiment=smoke", "framework=tf", "model=mlp", "bench.mode=xla",
                        "threads=1", "bench.threads=[1]", *TINY_BENCH, *redirected_paths(smoke_data))
    assert result.returncode == 0, result.stderr[-3000:]
    columns, rows = read_csv_rows(smoke_data / "results/smoke/digits/bench/tf/mlp/xla/b64-t1/r0.csv")
    assert tuple(columns) == RESULT_COLUMNS
    assert {(row["intra_op_threads"], row["inter_op_threads"]) for row in rows} == {("1", "1")}


# ---------------------------------------------------------------- the table


def fake_rows(framework, model, mode, start, end, host="vm", throughputs=(100.0, 110.0, 120.0), replicate=0,
              batch_size=128, threads=2):
    rows = []
    for window, value in enumerate(throughputs):
        row = {column: 0 for column in RESULT_COLUMNS}
        row.update(framework=framework, model=model, mode=mode, batch_size=batch_size, threads=threads,
                   replicate=replicate, window=window, hostname=host, job_start_unix=start, job_end_unix=end,
                   train_samples_per_s=value)
        rows.append(row)
    return rows


def test_schema_check_names_missing_columns():
    check_columns(RESULT_COLUMNS, "ok")
    with pytest.raises(DataError, match="missing \\['first_step_s'\\]"):
        check_columns([c for c in RESULT_COLUMNS if c != "first_step_s"], "old.csv")


def test_overlapping_jobs_on_one_machine_are_refused():
    import pandas as pd

    apart = pd.DataFrame(fake_rows("tf", "mlp", "graph", 0, 10) + fake_rows("torch", "mlp", "eager", 10, 20))
    check_no_overlap(apart)
    other_host = pd.DataFrame(fake_rows("tf", "mlp", "graph", 0, 10)
                              + fake_rows("torch", "mlp", "eager", 5, 20, host="node2"))
    check_no_overlap(other_host)
    overlapping = pd.DataFrame(fake_rows("tf", "mlp", "graph", 0, 10) + fake_rows("torch", "mlp", "eager", 9, 20))
    with pytest.raises(DataError, match="overlapped on vm: tf/mlp/graph"):
        check_no_overlap(overlapping)


def write_fake_jobs(cfg) -> None:
    """Rows and a record for every process of cfg's bench schedule, one second apart."""
    from fwbench.bench.outputs import job_record_path
    from fwbench.bench.run import write_job_record
    from fwbench.bench.table import write_rows

    for job in bench_schedule(cfg):
        start = job.position
        rows = fake_rows(job.framework, job.model, job.mode, start, start + 0.5, replicate=job.replicate,
                         batch_size=job.batch_size, threads=job.threads)
        for row in rows:
            row.update(schedule_position=job.position, schedule_block=job.block)
        write_rows(job_rows_path(cfg, *job.variant, job.replicate), rows)
        job_cfg = cfg.copy()
        job_cfg.framework.name, job_cfg.model.name, job_cfg.bench.mode = job.framework, job.model, job.mode
        job_cfg.trainer.batch_size, job_cfg.threads, job_cfg.bench.replicate = job.batch_size, job.threads, job.replicate
        write_job_record(job_cfg, job_record_path(cfg, *job.variant, job.replicate))


def test_aggregate_writes_the_schema_and_a_summary(tmp_path):
    from fwbench.bench.outputs import results_path, schedule_path, summary_path
    from fwbench.bench.run import aggregate_results

    cfg = compose_config(CONFIG_DIR, ["experiment.frameworks=[torch]", "bench.frameworks=[torch]", "bench.models=[mlp]", "bench.replicates=2",
                                      "bench.control_model=mlp", "tracking.enabled=false", *redirected_paths(tmp_path)])
    write_fake_jobs(cfg)
    aggregate_results(cfg)
    columns, rows = read_csv_rows(results_path(cfg))
    assert tuple(columns) == RESULT_COLUMNS
    assert {(row["mode"], row["replicate"]) for row in rows} == {(m, r) for m in MODES["torch"] for r in "01"}
    assert {row["mlflow_run_id"] for row in rows} == {""}
    summary_columns, summary = read_csv_rows(summary_path(cfg))
    assert len(summary) == len(MODES["torch"])
    assert {"processes", "train_samples_per_s_mean", "train_samples_per_s_cv_between",
            "train_samples_per_s_cv_within"} <= set(summary_columns)
    _, schedule = read_csv_rows(schedule_path(cfg))
    assert [int(row["schedule_position"]) for row in schedule] == list(range(4))
    assert [(row["mode"], row["replicate"]) for row in schedule] == [
        (job.mode, str(job.replicate)) for job in bench_schedule(cfg)]


def test_aggregate_logs_each_jobs_run_once_with_the_jobs_tags(tmp_path, monkeypatch):
    """bench_table logs one MLflow run per job, from the job's record; a second aggregation reuses them."""
    from mlflow import MlflowClient

    from fwbench.tracking import runs as tracking
    from fwbench.bench.outputs import results_path
    from fwbench.bench.run import aggregate_results

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(tracking.ENV_RULE, "bench")
    monkeypatch.setenv(tracking.ENV_LOG, str(tmp_path / "bench.log"))
    (tmp_path / "bench.log").write_text("the job's log\n")
    cfg = compose_config(CONFIG_DIR, ["experiment.frameworks=[torch]", "bench.frameworks=[torch]", "bench.models=[mlp]", "bench.replicates=1",
                                      "bench.control_model=mlp", *redirected_paths(tmp_path)])
    parent = tracking.start_pipeline_run(cfg)
    write_fake_jobs(cfg)  # the records take the rule and the log from the environment, as a job's do
    monkeypatch.delenv(tracking.ENV_RULE)
    monkeypatch.delenv(tracking.ENV_LOG)

    aggregate_results(cfg)
    _, rows = read_csv_rows(results_path(cfg))
    run_ids = {(row["mode"], row["replicate"]): row["mlflow_run_id"] for row in rows}
    # torch eager on mlp is the control: two processes; compile one.
    assert sorted(run_ids) == [("compile", "0"), ("eager", "0"), ("eager", "1")]
    assert len(set(run_ids.values())) == 3
    client = MlflowClient(parent["tracking_uri"])
    for (mode, replicate), run_id in run_ids.items():
        run = client.get_run(run_id)
        tags = run.data.tags
        assert (tags["job"], tags["model"], tags["mode"], tags["snakemake_rule"]) == ("bench", "mlp", mode, "bench")
        assert tags["replicate"] == replicate
        assert tags["mlflow.parentRunId"] == parent["parent_run_id"]
        assert run.data.params["bench.mode"] == mode
        assert sorted(m.value for m in client.get_metric_history(run_id, "train_samples_per_s")) == [100, 110, 120]
        assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "logs", f"r{replicate}.csv"}

    aggregate_results(cfg)
    _, again = read_csv_rows(results_path(cfg))
    assert {(row["mode"], row["replicate"]): row["mlflow_run_id"] for row in again} == run_ids
    children = client.search_runs([parent["experiment_id"]], "tags.job = 'bench'")
    assert len(children) == 3


def test_summary_shows_the_between_and_the_within_process_spread():
    import pandas as pd

    table = pd.DataFrame(fake_rows("tf", "mlp", "graph", 0, 1, throughputs=(90.0, 110.0), replicate=0)
                         + fake_rows("tf", "mlp", "graph", 2, 3, throughputs=(190.0, 210.0), replicate=1))
    summary = summarize(table).iloc[0]
    assert summary["processes"] == 2
    assert summary["train_samples_per_s_mean"] == 150.0  # the mean of the process means 100 and 200
    assert summary["train_samples_per_s_cv_between"] == pytest.approx(np.std([100, 200], ddof=1) / 150)
    within = (np.std([90, 110], ddof=1) / 100 + np.std([190, 210], ddof=1) / 200) / 2
    assert summary["train_samples_per_s_cv_within"] == pytest.approx(within)


def test_process_means_average_each_processs_windows_and_skip_a_process_without_a_value():
    import pandas as pd

    rows = pd.DataFrame({"replicate": [1, 1, 0, 0, 2], "train_samples_per_s": [10.0, 12.0, 20.0, 22.0, np.nan]})
    means = process_means(rows, "train_samples_per_s")
    assert means.to_dict() == {0: 21.0, 1: 11.0}


def test_overlapping_replicates_of_one_variant_are_refused():
    import pandas as pd

    overlapping = pd.DataFrame(fake_rows("tf", "mlp", "graph", 0, 10, replicate=0)
                               + fake_rows("tf", "mlp", "graph", 9, 20, replicate=1))
    with pytest.raises(DataError, match="tf/mlp/graph/128/2 replicate 0"):
        check_no_overlap(overlapping)


# ---------------------------------------------------------------- memory that the code owns

ANON_PEAK_PROBE = """
import json, mmap, os, sys
from fwbench.bench.memory import AnonPeak, anon_mb, PeakRss

path, size_mb, allocate_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "wb") as handle:
    handle.write(os.urandom(1 << 20) * size_mb)
file_before = PeakRss.file_mb()
peak = AnonPeak(baseline_mb=anon_mb())
peak.start()
with open(path, "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    touched = sum(mapped[offset] for offset in range(0, len(mapped), mmap.PAGESIZE))
    file_during = PeakRss.file_mb()
    held = bytearray(allocate_mb << 20)  # zero pages are not resident until written:
    for offset in range(0, len(held), mmap.PAGESIZE):
        held[offset] = 1
    peak.stop()
print(json.dumps({"anon_mb": peak.above_baseline_mb(), "file_mb": file_during - file_before,
                  "samples": peak.samples}))
"""


def anon_probe(tmp_path, size_mb: int, allocate_mb: int) -> dict:
    result = subprocess.run([sys.executable, "-c", ANON_PEAK_PROBE, str(tmp_path / "big.bin"), str(size_mb),
                             str(allocate_mb)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_memory_phase_excludes_a_large_mapped_file(tmp_path):
    """A process maps and reads a 192 MB file without touching anonymous memory: its resident file pages
    rise by about the file's size, its anonymous peak does not."""
    probe = anon_probe(tmp_path, size_mb=192, allocate_mb=0)
    assert probe["file_mb"] > 150
    assert probe["anon_mb"] < 16
    assert probe["samples"] >= 2


def test_memory_phase_sees_anonymous_memory(tmp_path):
    """The same probe with 96 MB written to the heap: the anonymous peak holds them, and no more of the file."""
    probe = anon_probe(tmp_path, size_mb=64, allocate_mb=96)
    assert 90 < probe["anon_mb"] < 96 + 16


# ---------------------------------------------------------------- the DAG: timed jobs alone


def test_bench_jobs_hold_the_machine_and_every_other_job_a_share(tmp_path):
    """Dry run: each job's resources. A bench job holds the whole cap, so nothing runs beside it."""
    overrides = " ".join(redirected_paths(tmp_path))
    result = run_snakemake("-n", "--config", "experiment=smoke", f"overrides={overrides}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = result.stdout.split("\nrule ")[1:]
    shares = {}
    for job in jobs:
        name = job.split(":", 1)[0]
        if "Shell command: None" in job:  # the target rule: runs nothing
            continue
        for line in job.splitlines():
            if line.strip().startswith("resources:"):
                shares.setdefault(name, set()).add(line.split("machine_share=")[1].split(",")[0])
    assert shares.pop("bench") == {"1000"}
    assert shares and all(values == {"1"} for values in shares.values()), shares


# ---------------------------------------------------------------- the GPU script


def load_gpu_bench():
    sys.path.insert(0, str(PROJECT_ROOT / "scripts"))
    try:
        import gpu_bench
    finally:
        sys.path.pop(0)
    return gpu_bench


def test_gpu_bench_names_its_folder_after_the_device():
    gpu_bench = load_gpu_bench()
    assert gpu_bench.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_bench.report_folder(PROJECT_ROOT / "reports", "NVIDIA H100 80GB HBM3").name == "gpu-nvidia-h100-80gb-hbm3"


def test_gpu_bench_refuses_a_machine_without_gpu(monkeypatch, capsys):
    gpu_bench = load_gpu_bench()
    monkeypatch.setattr(gpu_bench, "detect_gpu", lambda: None)
    assert gpu_bench.main([]) == gpu_bench.EXIT_NO_GPU
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.slow
def test_gpu_bench_runs_the_grid_with_only_the_device_mocked(smoke_data, monkeypatch):
    """On the CPU, with detect_gpu pretending: the whole script, a tiny grid, results under reports/gpu-<name>/."""
    gpu_bench = load_gpu_bench()
    monkeypatch.setattr(gpu_bench, "detect_gpu", lambda: "Fake GPU 9000")
    reports = smoke_data / "gpu-reports"
    overrides = ["experiment=smoke", *TINY_BENCH, f"paths.data={smoke_data / 'data'}"]
    assert gpu_bench.main(["--reports-dir", str(reports), "--work-root", str(smoke_data / "gpu-work"),
                           "--cores", "2", *overrides]) == 0
    folder = reports / "gpu-fake-gpu-9000"
    columns, rows = read_csv_rows(folder / "bench_results.csv")
    assert tuple(columns) == RESULT_COLUMNS
    smoke = compose_config(CONFIG_DIR, ["experiment=smoke"])
    assert {(row["framework"], row["mode"]) for row in rows} == {
        (framework, mode) for framework in smoke.experiment.frameworks for mode in MODES[framework]
    }
    assert "Fake GPU 9000" in (folder / "device.json").read_text()
    _, schedule = read_csv_rows(folder / "bench_schedule.csv")
    assert len(schedule) == len({(row["framework"], row["model"], row["mode"], row["replicate"]) for row in rows})
