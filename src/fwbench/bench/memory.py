"""Memory of this process: the anonymous peak that the code owns, and the total RSS per phase.

Claim 3 is judged on anonymous memory (RssAnon: heap, tensors, arena and
allocator pages, none backed by a file), which the page cache cannot move.
Linux keeps no high-water mark of anonymous memory, so `AnonPeak` samples it
from a thread while an untimed phase runs (the bench's memory phase, after the
timed windows) and reports the highest reading above a baseline taken right
after the framework import and the data load. A peak shorter than the sampling
interval can be missed; the steps sampled here last milliseconds or more, and
the number of readings is recorded.

The total RSS, per phase, stays beside it for reference:

`ru_maxrss` only ever grows: read after training it still holds the peak of
importing a framework or loading the data. Linux can reset the peak to the
current RSS (writing 5 to /proc/self/clear_refs, Linux >= 4.0), after which
VmHWM in /proc/self/status is the peak of the phase alone. Where that is not
allowed, the tracker falls back to the cumulative `ru_maxrss` and says so
(`method`), so a reader never mistakes one for the other.

RSS includes the pages of mapped files (the frameworks' shared libraries),
and how many of those are resident depends on the page cache, not on the
code: `import torch` had 230 MB of files resident from one virtual
environment and 313 MB from a fresh `pip install` of the same pins, and 230 MB
from both once the page cache was dropped (the kernel maps a freshly written
file's pages in larger pieces). A bench job records that file-backed part
after training (`file_mb`, the rows' rss_file_after_train_mb), so a difference
of that size can be told apart.
"""

from __future__ import annotations

import math
import os
import resource
import threading
from pathlib import Path

from fwbench.units import BYTES_PER_MIB, KIB_PER_MIB

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
# Pages: size resident shared text lib data dt; shared = RssFile + RssShmem, so resident - shared = RssAnon.
STATM = Path("/proc/self/statm")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# One reading per millisecond: a training step here lasts 1-200 ms, its activations most of that.
SAMPLE_INTERVAL_S = 0.001
RESET_PEAK_RSS = "5"
PER_PHASE = "per_phase"
CUMULATIVE = "cumulative"


def _status_kib(field: str) -> int | None:
    """A `VmXXX:  1234 kB` line of /proc/self/status, in KiB."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRss:
    """Reset the process's peak RSS at the start of a phase; read it at the end."""

    def __init__(self) -> None:
        self.method = PER_PHASE if self._try_reset() else CUMULATIVE

    def _try_reset(self) -> bool:
        try:
            CLEAR_REFS.write_text(RESET_PEAK_RSS)
        except OSError:
            return False
        return _status_kib("VmHWM") is not None

    def reset(self) -> None:
        if self.method == PER_PHASE:
            self._try_reset()

    def peak_mb(self) -> float:
        """Peak RSS since the last reset (per_phase) or since start (cumulative), in MiB."""
        kib = _status_kib("VmHWM") if self.method == PER_PHASE else None
        if kib is None:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return kib / KIB_PER_MIB

    @staticmethod
    def file_mb() -> float:
        """The file-backed part of the current RSS (RssFile, Linux >= 4.5); NaN where not reported."""
        kib = _status_kib("RssFile")
        return math.nan if kib is None else kib / KIB_PER_MIB

    @staticmethod
    def current_mb() -> float:
        kib = _status_kib("VmRSS")
        if kib is None:
            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib / KIB_PER_MIB


def anon_mb() -> float:
    """This process's anonymous resident memory in MiB: statm's resident minus its shared (file and shmem) pages.

    /proc/self/statm is read rather than status because it is one short line:
    the sampler reads it a thousand times a second. NaN where it cannot be read.
    """
    try:
        fields = STATM.read_text().split()
        return (int(fields[1]) - int(fields[2])) * PAGE_BYTES / BYTES_PER_MIB
    except (OSError, ValueError, IndexError):
        return math.nan


class AnonPeak:
    """The highest anonymous RSS a thread reads while a phase runs, above a baseline.

        peak = AnonPeak(baseline_mb=anon_mb())
        peak.start(); ...the phase...; peak.stop()
        peak.above_baseline_mb(), peak.samples
    """

    def __init__(self, baseline_mb: float, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.baseline_mb = baseline_mb
        self.interval_s = interval_s
        self.highest_mb = math.nan
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._read()
        self._thread = threading.Thread(target=self._run, name="fwbench-anon-peak", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()

    def above_baseline_mb(self) -> float:
        """The phase's peak minus the baseline (NaN when nothing was read)."""
        return self.highest_mb - self.baseline_mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def _read(self) -> None:
        value = anon_mb()
        if math.isfinite(value):
            self.samples += 1
            self.highest_mb = value if math.isnan(self.highest_mb) else max(self.highest_mb, value)
