"""Peak memory is the measured process's own: not inherited from a large parent, and resettable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lra_bench.benchmarks.process_memory import current_rss_mb, peak_rss_mb, reset_peak_rss

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux")


def touched(mb: int) -> bytearray:
    block = bytearray(mb * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # make every page resident
    return block


@linux_only
def test_a_child_of_a_large_parent_reports_its_own_peak() -> None:
    block = touched(400)
    assert peak_rss_mb() > 400
    code = "from lra_bench.benchmarks.process_memory import peak_rss_mb; print(peak_rss_mb())"
    child_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del block
    # ru_maxrss would say > 400 here: Linux carries it across fork + exec
    assert child_peak < 200


@linux_only
def test_reset_starts_a_new_peak_window() -> None:
    block = touched(300)
    del block
    before = peak_rss_mb()
    assert reset_peak_rss()
    after = peak_rss_mb()
    assert after < before - 250 and after == pytest.approx(current_rss_mb(), abs=50)
    block = touched(100)
    assert peak_rss_mb() >= after + 90
