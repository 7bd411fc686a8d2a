"""Peak memory is the measured process's own: not inherited from a large parent, and resettable."""

from __future__ import annotations

import mmap
import subprocess
import sys

import pytest

from lra_bench.benchmarks.process_memory import current_rss_mb, peak_rss_mb, reset_peak_rss

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux")


def touched(mb: int) -> mmap.mmap:
    """``mb`` MiB of fresh resident pages.

    A fresh anonymous mapping, not a ``bytearray``: malloc may hand a bytearray pages that an earlier
    test freed but the heap kept resident, and then the resident set does not grow (seen on CI).
    """
    block = mmap.mmap(-1, mb * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


@linux_only
def test_a_child_of_a_large_parent_reports_its_own_peak() -> None:
    block = touched(400)
    assert peak_rss_mb() > 400
    code = "from lra_bench.benchmarks.process_memory import peak_rss_mb; print(peak_rss_mb())"
    child_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    block.close()
    # ru_maxrss would say > 400 here: Linux carries it across fork + exec
    assert child_peak < 200


@linux_only
def test_reset_starts_a_new_peak_window() -> None:
    touched(300).close()
    before = peak_rss_mb()
    assert reset_peak_rss()
    after = peak_rss_mb()
    assert after < before - 250 and after == pytest.approx(current_rss_mb(), abs=50)
    block = touched(100)
    assert peak_rss_mb() >= after + 90
    block.close()
