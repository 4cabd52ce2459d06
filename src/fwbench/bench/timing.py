"""Clocks for the bench: training windows at step boundaries, and timed calls.

The training loop of both adapters polls a `should_stop()` function once per
step (the SIGTERM flag of fwbench.training.loop). The bench hands them a
`StepClock` in its place: at the polls that bound a timed window it
synchronizes the device and reads the clock, and once it has the windows it
needs it asks the loop to stop. So the timed code is exactly the pipeline's
training path, with no extra callback or per-step work: between boundaries a
poll is one counter increment.

Where the adapters poll (pinned by tests/test_bench.py):
- Keras (`_StopWhen.on_train_batch_end`): after each step, so poll i ends step i;
- torch (top of the loop body): before each step, so poll i ends step i - 1.
That offset is each FrameworkSpec's `poll_lag` (fwbench.frameworks.registry).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Both adapters get one step more than the windows need: torch only polls
# after a step when another step follows it. The extra step is never timed.
TRAILING_STEPS = 1


def no_sync() -> None:
    """A CPU needs no synchronization: the step has finished when the poll comes."""


@dataclass(frozen=True)
class TrainingPlan:
    """Which steps are warm-up, which form the timed windows, which the memory phase, for one adapter.

    Steps 0 .. warmup_steps-1 are untimed (step 0 traces and compiles, and is
    reported alone); window k covers the `window_steps` steps that start at
    warmup_steps + k * window_steps, for k < windows: a fixed number, every one
    reported, so no window is chosen for agreeing with the others. Then
    `memory_steps` untimed steps, during which the anonymous memory is sampled
    (memory.AnonPeak): the sampler never runs inside a timed window.
    """

    warmup_steps: int
    window_steps: int
    windows: int
    poll_lag: int
    memory_steps: int = 0

    def __post_init__(self) -> None:
        # Step 0 carries the compilation: it must never fall inside a window.
        if self.warmup_steps < 1 or self.window_steps < 1 or self.windows < 1 or self.memory_steps < 0:
            raise ValueError(f"warm-up, window steps and windows must be >= 1, memory steps >= 0, got {self}")

    @property
    def steps(self) -> int:
        """Training steps to plan for: warm-up, every window, the memory phase and the trailing step."""
        return self.warmup_steps + self.windows * self.window_steps + self.memory_steps + TRAILING_STEPS

    def poll_after(self, step: int) -> int:
        """Index of the poll that comes right after `step` has finished."""
        return step + self.poll_lag

    @property
    def first_step_poll(self) -> int:
        return self.poll_after(0)

    def window_polls(self, window: int) -> tuple[int, int]:
        """(poll that opens, poll that closes) window `window`."""
        first = self.warmup_steps + window * self.window_steps
        return self.poll_after(first - 1), self.poll_after(first + self.window_steps - 1)

    def window_closed_by(self, poll: int) -> int | None:
        """The window that `poll` closes, or None."""
        window, offset = divmod(poll - self.poll_after(self.warmup_steps - 1), self.window_steps)
        return window - 1 if offset == 0 and 1 <= window <= self.windows else None

    @property
    def memory_polls(self) -> tuple[int, int] | None:
        """(poll that opens, poll that closes) the memory phase, right after the last window; None without one."""
        if not self.memory_steps:
            return None
        opening = self.window_polls(self.windows - 1)[1]
        return opening, opening + self.memory_steps

    @property
    def final_poll(self) -> int:
        """The poll at which the job has everything it measures: the loop stops there."""
        return self.memory_polls[1] if self.memory_steps else self.window_polls(self.windows - 1)[1]

    def boundary_polls(self) -> set[int]:
        polls = {self.first_step_poll, self.final_poll}
        for window in range(self.windows):
            polls.update(self.window_polls(window))
        return polls


def coefficient_of_variation(values) -> float:
    """Sample standard deviation over mean: the stability statistic of the bench.

    NaN below two values, and for a mean of zero (a metric that does not apply, e.g. device memory on a CPU).
    """
    values = list(values)
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    if mean == 0:
        return math.nan
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return variance ** 0.5 / mean


def throughput_cv(window_seconds: list[float]) -> float:
    """CV of the windows' throughput, which is 1 / seconds up to a constant: the statistic
    the summary reports (train_samples_per_s_cv)."""
    return coefficient_of_variation(1.0 / seconds for seconds in window_seconds)


@dataclass
class StepClock:
    """A `should_stop` stand-in that timestamps the polls bounding the windows.

    At a boundary it syncs the device, reads the clock (`arrive`), runs
    `on_boundary(poll)` (memory bookkeeping), and reads the clock again
    (`leave`): a window runs from its opening poll's `leave` to its closing
    poll's `arrive`, so bookkeeping never lands inside one. At the plan's
    final poll (windows and memory phase done) it asks the loop to stop.
    """

    plan: TrainingPlan
    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] = no_sync
    on_boundary: Callable[[int], None] = lambda poll: None
    polls: int = 0
    marks: dict[int, tuple[float, float]] = field(default_factory=dict)
    done: bool = False
    _windows: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._boundaries = self.plan.boundary_polls()

    def __call__(self) -> bool:
        poll = self.polls
        self.polls += 1
        if self.done or poll not in self._boundaries:
            return self.done
        self.sync()
        arrive = self.clock()
        self.on_boundary(poll)
        window = self.plan.window_closed_by(poll)
        if window is not None:
            opening = self.plan.window_polls(window)[0]
            self._windows.append(arrive - self.marks[opening][1])
        self.done = poll == self.plan.final_poll
        self.marks[poll] = (arrive, self.clock())
        return self.done

    def window_seconds(self) -> list[float]:
        """Wall time of every window timed, in order."""
        self._check_complete()
        return list(self._windows)

    def first_step_seconds(self, called_at: float) -> float:
        """From calling the training entry point to the end of step 0."""
        self._check_complete()
        return self.marks[self.plan.first_step_poll][0] - called_at

    def _check_complete(self) -> None:
        if not self.done:
            missing = sorted(self._boundaries - set(self.marks)) or [self.plan.final_poll]
            raise RuntimeError(
                f"the training loop polled {self.polls} times but the plan needs poll {missing[0]}: "
                f"it must poll should_stop once per step (up to {self.plan.steps} steps)"
            )


def time_calls(fn: Callable[[], object], calls: int, clock: Callable[[], float] = time.perf_counter,
               sync: Callable[[], None] = no_sync) -> list[float]:
    """Seconds per call of `fn`, each synchronized before its clock stops."""
    durations = []
    for _ in range(calls):
        start = clock()
        fn()
        sync()
        durations.append(clock() - start)
    return durations

