"""Peak resident memory of this process, per phase.

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
import resource
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_PEAK_RSS = "5"
KIB_PER_MIB = 1024
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
