"""Peak resident memory of this process, measured so that a parent process cannot leak into it.

``getrusage(RUSAGE_SELF).ru_maxrss`` survives ``fork`` + ``exec`` on Linux: a benchmark cell or a training
run started by a large parent (pytest, a sweep driver) would report the parent's peak. ``VmHWM`` in
``/proc/self/status`` belongs to the process's own address space, and writing ``5`` to
``/proc/self/clear_refs`` resets it, so a measurement can start after the model is built.
Elsewhere (macOS) ``ru_maxrss`` is the fallback.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    rss = _status_mb("VmRSS")
    if rss is None:
        import psutil

        rss = psutil.Process().memory_info().rss / 2**20
    return rss


def peak_rss_mb() -> float:
    """Peak RSS in MiB of this process since it started or since the last ``reset_peak_rss``."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0); False where the platform cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True
