"""Clocks for the bench: training windows at step boundaries, and timed calls.

The training loop of both adapters polls a `should_stop()` function once per
step (the SIGTERM flag of fwbench.training.loop). The bench hands them a
`StepClock` in its place: it never asks to stop, and at the polls that bound
a timed window it synchronizes the device and reads the clock. So the timed
code is exactly the pipeline's training path, with no extra callback or
per-step work: between boundaries a poll is one counter increment.

Where the adapters poll (pinned by tests/test_bench.py):
- Keras (`_StopWhen.on_train_batch_end`): after each step, so poll i ends step i;
- torch (top of the loop body): before each step, so poll i ends step i - 1.
`POLL_LAG` is that offset.
"""

from __future__ import annotations

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
    warmup_steps + k * window_steps.
    """

    warmup_steps: int
    window_steps: int
    trials: int
    poll_lag: int

    def __post_init__(self) -> None:
        # Step 0 carries the compilation: it must never fall inside a window.
        if self.warmup_steps < 1 or self.window_steps < 1 or self.trials < 1:
            raise ValueError(f"warm-up, window and trials must be >= 1, got {self}")

    @property
    def steps(self) -> int:
        """Training steps to run: warm-up, every window, and the trailing step."""
        return self.warmup_steps + self.trials * self.window_steps + TRAILING_STEPS

    def poll_after(self, step: int) -> int:
        """Index of the poll that comes right after `step` has finished."""
        return step + self.poll_lag

    @property
    def first_step_poll(self) -> int:
        return self.poll_after(0)

    def window_polls(self, trial: int) -> tuple[int, int]:
        """(poll that opens, poll that closes) window `trial`."""
        first = self.warmup_steps + trial * self.window_steps
        return self.poll_after(first - 1), self.poll_after(first + self.window_steps - 1)

    def boundary_polls(self) -> set[int]:
        polls = {self.first_step_poll}
        for trial in range(self.trials):
            polls.update(self.window_polls(trial))
        return polls


@dataclass
class StepClock:
    """A `should_stop` stand-in that timestamps the polls bounding the windows.

    At a boundary it syncs the device, reads the clock (`arrive`), runs
    `on_boundary(poll)` (memory bookkeeping), and reads the clock again
    (`leave`): a window runs from its opening poll's `leave` to its closing
    poll's `arrive`, so bookkeeping never lands inside one.
    """

    plan: TrainingPlan
    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] = no_sync
    on_boundary: Callable[[int], None] = lambda poll: None
    polls: int = 0
    marks: dict[int, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._boundaries = self.plan.boundary_polls()

    def __call__(self) -> bool:
        poll = self.polls
        self.polls += 1
        if poll in self._boundaries:
            self.sync()
            arrive = self.clock()
            self.on_boundary(poll)
            self.marks[poll] = (arrive, self.clock())
        return False

    def window_seconds(self) -> list[float]:
        """Wall time of each trial's window, in trial order."""
        self._check_complete()
        durations = []
        for trial in range(self.plan.trials):
            opening, closing = self.plan.window_polls(trial)
            durations.append(self.marks[closing][0] - self.marks[opening][1])
        return durations

    def first_step_seconds(self, called_at: float) -> float:
        """From calling the training entry point to the end of step 0."""
        self._check_complete()
        return self.marks[self.plan.first_step_poll][0] - called_at

    def _check_complete(self) -> None:
        missing = sorted(self._boundaries - set(self.marks))
        if missing:
            raise RuntimeError(
                f"the training loop polled {self.polls} times but the plan needs polls {missing}: "
                f"it must poll should_stop once per step ({self.plan.steps} steps)"
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

