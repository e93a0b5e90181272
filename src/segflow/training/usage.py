"""What a training run uses, for its summary: wall-clock time and the process's peak memory."""

from __future__ import annotations

import resource
import time


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    """Seconds since it was made (a monotonic clock)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start
