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
`POLL_LAG` is that offset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

POLL_LAG = {"tf": 0, "torch": 1}
# Both adapters get one step more than the windows need: torch only polls
# after a step when another step follows it. The extra step is never timed.
TRAILING_STEPS = 1


def no_sync() -> None:
    """A CPU needs no synchronization: the step has finished when the poll comes."""


@dataclass(frozen=True)
class TrainingPlan:
    """Which steps are warm-up, which form the timed windows, for one adapter.

    Steps 0 .. warmup_steps-1 are untimed (step 0 traces and compiles, and is
    reported alone); window k covers the `window_steps` steps that start at
    warmup_steps + k * window_steps. The job's trials are its last `trials`
    windows.

    Without `steady_cv` the job times exactly `trials` windows. With it, the
    job times windows until the last `trials` of them have a throughput CV of
    at most `steady_cv`, or until `max_windows` windows (steady-state
    detection: Georges, Buytaert and Eeckhout, "Statistically rigorous Java
    performance evaluation", OOPSLA 2007). A machine whose speed drifts for
    seconds at a time then reports a stretch where it held still, and says how
    many windows it took (`windows_timed`) or that it never did.
    """

    warmup_steps: int
    window_steps: int
    trials: int
    poll_lag: int
    steady_cv: float | None = None
    max_windows: int | None = None

    def __post_init__(self) -> None:
        # Step 0 carries the compilation: it must never fall inside a window.
        if self.warmup_steps < 1 or self.window_steps < 1 or self.trials < 1:
            raise ValueError(f"warm-up, window and trials must be >= 1, got {self}")
        if self.steady_cv is not None and (self.trials < 2 or (self.max_windows or 0) < self.trials):
            raise ValueError(f"steady-state windows need trials >= 2 and max_windows >= trials, got {self}")

    @property
    def windows(self) -> int:
        """The most windows the job may time."""
        return self.trials if self.steady_cv is None else self.max_windows

    @property
    def steps(self) -> int:
        """Training steps to plan for: warm-up, every window, and the trailing step."""
        return self.warmup_steps + self.windows * self.window_steps + TRAILING_STEPS

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

    def boundary_polls(self) -> set[int]:
        polls = {self.first_step_poll}
        for window in range(self.windows):
            polls.update(self.window_polls(window))
        return polls

    def is_done(self, window_seconds: list[float]) -> bool:
        """After a window closes: enough windows, and (with steady_cv) the last `trials` steady."""
        timed = len(window_seconds)
        if timed >= self.windows:
            return True
        if self.steady_cv is None or timed < self.trials:
            return False
        return throughput_cv(window_seconds[-self.trials:]) <= self.steady_cv


def coefficient_of_variation(values) -> float:
    """Sample standard deviation over mean: the stability statistic of the bench (NaN below two values)."""
    values = list(values)
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
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
    poll's `arrive`, so bookkeeping never lands inside one. Once the plan has
    the windows it needs (`TrainingPlan.is_done`), it asks the loop to stop.
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
        # The stop decision comes before `leave`: this poll may open the next window.
        window = self.plan.window_closed_by(poll)
        if window is not None:
            opening = self.plan.window_polls(window)[0]
            self._windows.append(arrive - self.marks[opening][1])
            self.done = self.plan.is_done(self._windows)
        self.marks[poll] = (arrive, self.clock())
        return self.done

    def window_seconds(self) -> list[float]:
        """Wall time of every window timed, in order."""
        self._check_complete()
        return list(self._windows)

    def trial_seconds(self) -> list[float]:
        """Wall time of the trials' windows: the last `trials` windows timed."""
        return self.window_seconds()[-self.plan.trials:]

    def first_step_seconds(self, called_at: float) -> float:
        """From calling the training entry point to the end of step 0."""
        self._check_complete()
        return self.marks[self.plan.first_step_poll][0] - called_at

    def _check_complete(self) -> None:
        if not self.done:
            missing = sorted(self._boundaries - set(self.marks))
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

