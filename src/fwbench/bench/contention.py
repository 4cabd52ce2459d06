"""How much of the machine other processes took while a job was measuring.

A speed number from a busy machine is not a speed number: on 2 cores, one
other busy process slows compiled code (many short parallel regions, each
waiting for its slowest thread) several-fold. The load average cannot say it
(it counts the job itself and lags a minute), so the bench measures it: CPU
time the whole machine spent busy (/proc/stat) minus the CPU time this process
spent, over the measured phases, as a share of the machine. 0 = nobody else
ran; 0.5 on 2 cores = another process held a full core throughout.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal guest guest_nice.
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest is inside user)


def _machine_busy_seconds() -> float | None:
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()[1:]
        ticks = sum(int(fields[index]) for index in BUSY_FIELDS)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU time of this job: the process, its live descendants and its reaped children.

    Descendants count as the job's own: torch.compile's inductor compiles in a pool
    of worker processes, whose CPU time is the job's work, not another process's.
    """
    import psutil

    process = psutil.Process()
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:  # exited between the listing and the reading
            continue
        total += child_times.user + child_times.system
    return total


class BackgroundCpu:
    """Start at the first measured phase, read `share()` after the last."""

    def __init__(self) -> None:
        self.machine = _machine_busy_seconds()
        self.own = _own_cpu_seconds()
        self.wall = time.perf_counter()

    def share(self) -> float:
        """Other processes' CPU time / (wall time x logical CPUs); NaN where /proc/stat is unreadable."""
        machine = _machine_busy_seconds()
        if machine is None or self.machine is None:
            return math.nan
        wall = time.perf_counter() - self.wall
        other = (machine - self.machine) - (_own_cpu_seconds() - self.own)
        return max(other, 0.0) / (wall * (os.cpu_count() or 1))
