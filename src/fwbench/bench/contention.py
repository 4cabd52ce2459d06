"""How much of the machine other processes took while a job was measuring.

A speed number from a busy machine is not a speed number: on 2 cores, one
other busy process slows compiled code (many short parallel regions, each
waiting for its slowest thread) several-fold. The load average cannot say it
(it counts the job itself and lags a minute), so the bench measures it: CPU
time the whole machine spent busy (/proc/stat) minus the CPU time this process
spent, over the measured phases, as a share of the machine. 0 = nobody else
ran; 0.5 on 2 cores = another process held a full core throughout. It also
names the other processes that took the most of it (kernel threads included),
so a busy job's log says who was busy.

On a virtual machine the hypervisor may run other guests on this machine's
CPUs: that time is "steal" in /proc/stat, counted in the share (the job lost
it all the same) and also on its own, since no process of this machine owns
it and rerunning on an idle machine does not help while the host is busy.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's first line: cpu user nice system idle iowait irq softirq steal guest guest_nice.
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (guest is inside user)
STEAL_FIELD = 7
# Above this share of the machine taken by other processes, a job's numbers get a warning.
BUSY_SHARE = 0.05


def _machine_seconds(indices: tuple[int, ...]) -> float | None:
    """The machine's CPU seconds so far in these /proc/stat fields (all CPUs); None where it is unreadable."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()[1:]
        ticks = sum(int(fields[index]) for index in indices)
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float | None:
    return _machine_seconds(BUSY_FIELDS)


def _machine_steal_seconds() -> float | None:
    return _machine_seconds((STEAL_FIELD,))


def _own_cpu_seconds() -> float:
    """CPU time of this job: the process, its live descendants, and the children each reaped.

    Descendants count as the job's own: torch.compile's inductor compiles in a pool
    of worker processes, whose CPU time is the job's work, not another process's.
    A worker that ended was reaped by its parent, itself one of the descendants:
    its time is in that parent's children times.
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
        total += child_times.user + child_times.system + child_times.children_user + child_times.children_system
    return total


def _job_pids() -> set[int]:
    import psutil

    process = psutil.Process()
    return {process.pid, *(child.pid for child in process.children(recursive=True))}


def _other_processes_cpu() -> dict[tuple[int, float], tuple[str, float]]:
    """(pid, start time) -> (name, CPU seconds so far) of every readable process outside this job.

    The start time tells a reused pid from the process that had it before; the
    name cannot (a kernel worker's name follows the work queue it serves).
    """
    import psutil

    job = _job_pids()
    seconds = {}
    for process in psutil.process_iter(["name", "cpu_times", "create_time"]):
        times, started = process.info["cpu_times"], process.info["create_time"]
        if process.pid in job or times is None or started is None:  # None: exited or not readable
            continue
        seconds[process.pid, started] = (process.info["name"] or "?", times.user + times.system)
    return seconds


def busiest(before: dict, after: dict, count: int) -> list[tuple[str, int, float]]:
    """The `count` processes that used the most CPU time between two readings: (name, pid, seconds).

    Readings map (pid, start time) to (name, CPU seconds). A process missing from
    `before` started in between: all its time counts. Processes that ended in
    between are not seen.
    """
    taken = []
    for (pid, started), (name, seconds) in after.items():
        used = seconds - before.get((pid, started), (name, 0.0))[1]
        if used > 0:
            taken.append((name, pid, used))
    return sorted(taken, key=lambda item: item[2], reverse=True)[:count]


def describe(processes: list[tuple[str, int, float]]) -> str:
    """'snakemake (pid 12) 3.10 s; kworker/0:1 (pid 7) 0.40 s' (empty when none)."""
    return "; ".join(f"{name} (pid {pid}) {seconds:.2f} s" for name, pid, seconds in processes)


class BackgroundCpu:
    """Start at the first measured phase, read `share()` and `busiest()` after the last."""

    def __init__(self) -> None:
        self.others = _other_processes_cpu()
        self.machine = _machine_busy_seconds()
        self.steal = _machine_steal_seconds()
        self.own = _own_cpu_seconds()
        self.wall = time.perf_counter()

    def share(self) -> float:
        """Other processes' CPU time (steal included) / (wall time x logical CPUs); NaN where /proc/stat is
        unreadable."""
        machine = _machine_busy_seconds()
        if machine is None or self.machine is None:
            return math.nan
        other = (machine - self.machine) - (_own_cpu_seconds() - self.own)
        return self._of_machine(max(other, 0.0))

    def steal_share(self) -> float:
        """The hypervisor's steal time / (wall time x logical CPUs): in `share`'s busy time, but no process's here.

        It can exceed `share`: a guest may charge some stolen time to the process that was running (this job).
        """
        steal = _machine_steal_seconds()
        if steal is None or self.steal is None:
            return math.nan
        return self._of_machine(steal - self.steal)

    def _of_machine(self, cpu_seconds: float) -> float:
        return cpu_seconds / ((time.perf_counter() - self.wall) * (os.cpu_count() or 1))

    def busiest(self, count: int = 3) -> list[tuple[str, int, float]]:
        """The other processes that took the most CPU time since the start: (name, pid, seconds)."""
        return busiest(self.others, _other_processes_cpu(), count)
