"""Peak host memory (resident set size) of a block of code, sampled from /proc: what scoring costs in RAM.

`resource.getrusage`'s ru_maxrss is the peak of the whole process (the rendering models included) and
tracemalloc does not see torch's allocations, so a thread reads the process's RSS every few milliseconds
while the block runs; the peak minus the RSS at the start is what the block added.
"""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the process's peak so far (getrusage)."""
    if _STATM.is_file():
        return int(_STATM.read_text().split()[1]) * _PAGE
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """`with PeakRSS() as m: ...` then m.start, m.peak (bytes) and m.summary()."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.start, self.peak = interval_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def added(self) -> int:
        return self.peak - self.start

    def summary(self) -> str:
        mib = 1 << 20
        return (f"peak {self.peak / mib:.0f} MiB resident, {self.added / mib:+.0f} MiB over the "
                f"{self.start / mib:.0f} MiB at its start")
