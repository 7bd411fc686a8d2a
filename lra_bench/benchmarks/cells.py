"""Shared pieces of the benchmark commands: timing a training step, and one subprocess per cell.

A cell (one model at one length) runs in a fresh Python process so its peak memory is its own: on CPU
the peak RSS of that process, on CUDA the allocator's peak. The child prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def time_step(step: Callable[[], None], warmup: int, repeats: int, device: torch.device | None = None,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Run ``step`` warmup + repeats times; the median, min and max of the timed ones (seconds of ``clock``: wall time,
    or ``time.process_time`` for CPU time, which a step waiting for a core on a loaded machine is not charged)."""
    times = []
    for i in range(warmup + repeats):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        step()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(clock() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def run_cell(module: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``python -m module --cell <spec as JSON>`` in a fresh process; its last stdout line is the JSON result.

    A cell over the time budget, or one that fails (out of memory, say), comes back with ``skipped``."""
    cmd = [sys.executable, "-m", module, "--cell", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {timeout:.0f} s"}
    if proc.returncode:
        lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "Exception" in line]
        reason = (errors or lines or [f"exit status {proc.returncode}"])[-1][:200]
        if proc.returncode in (-9, 137):
            reason = "killed (out of memory?)"
        return {"skipped": reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def serve_cell(argv: list[str], measure: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """In the child of ``run_cell``: measure the spec and print the result as one JSON line. False when
    ``argv`` is not a cell call (the module then runs its own command line)."""
    if len(argv) < 2 or argv[0] != "--cell":
        return False
    print(json.dumps(measure(json.loads(argv[1]))))
    return True
