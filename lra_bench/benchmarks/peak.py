"""The reference fp32 matmul throughput that MFU divides by, measured so that it holds still.

One figure from one size in a loaded parent process (the median of 5 products of 2048 x 2048, taken after every
cell) read 110 GFLOP/s where a plain matmul minutes later ran at 169-172: the LRU's MFU came out at 114.8 %.
Here the peak is measured like a cell: in a fresh child process (``cells.run_cell``: the same process setting
and thread count as every cell), over several sizes, each the best (shortest) of ``repeats`` products after a
warm-up; the peak is the best of the sizes. The run measures it before the first cell and after the last and
reports both; the larger one is the peak (a larger peak can only lower an MFU), and a disagreement above
``MARGIN`` says the machine's load changed during the run.
"""

from __future__ import annotations

from typing import Any

MARGIN = 0.10  # default of bench.yaml's peak.margin: start and end peaks further apart than this (relative to the larger) are reported as unstable
SIZES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}
REPEATS = 10


def measure_peak(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: the best fp32 matmul FLOP/s per size; ``spec``: device, sizes, repeats."""
    import time

    import torch

    device = torch.device(spec["device"])
    per_size = {}
    for n in spec["sizes"]:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out = torch.empty(n, n, device=device)
        best = float("inf")
        for i in range(spec["repeats"] + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
        per_size[str(n)] = 2 * n**3 / best
    return {"peak_flops": max(per_size.values()), "per_size": per_size, "threads": torch.get_num_threads()}


def peak_in_child(device: str, sizes: list[int] | None = None, repeats: int = REPEATS, timeout: float = 300.0) -> dict[str, Any]:
    """``measure_peak`` in a fresh process, as a cell is measured; ``sizes`` None: ``SIZES`` of the device."""
    from lra_bench.benchmarks.cells import run_cell

    sizes = list(sizes or SIZES["cuda" if device.startswith("cuda") else "cpu"])
    spec = {"kind": "peak", "device": device, "sizes": sizes, "repeats": int(repeats)}
    result = run_cell("lra_bench.benchmarks.bench", spec, timeout)
    if "skipped" in result:
        raise RuntimeError(f"measuring the peak matmul throughput failed: {result['skipped']}")
    return result


def compare(start: dict[str, Any], end: dict[str, Any], margin: float = MARGIN) -> dict[str, Any]:
    """The run's peak (the larger of the two), both measurements, their relative gap and whether it is stable."""
    a, b = start["peak_flops"], end["peak_flops"]
    gap = abs(a - b) / max(a, b)
    out = {"peak_flops": max(a, b), "peak_start_flops": a, "peak_end_flops": b, "peak_gap": gap,
           "peak_margin": margin, "peak_stable": gap <= margin, "peak_threads": start.get("threads")}
    if gap > margin:
        out["peak_note"] = (f"the peak measured at the start ({a / 1e9:,.0f} GFLOP/s) and at the end ({b / 1e9:,.0f}) "
                            f"differ by {100 * gap:.0f}% > {100 * margin:.0f}%: the machine's load changed during the "
                            f"run; speeds and MFU are less comparable across cells")
    return out


def describe(meta: dict[str, Any]) -> str:
    """One line: both peaks, the gap and the margin."""
    line = (f"peak fp32 matmul {meta['peak_flops'] / 1e9:,.0f} GFLOP/s (best of sizes x repeats in a fresh process, "
            f"{meta.get('peak_threads')} threads; start {meta['peak_start_flops'] / 1e9:,.0f}, end "
            f"{meta['peak_end_flops'] / 1e9:,.0f}, gap {100 * meta['peak_gap']:.0f}%, margin {100 * meta['peak_margin']:.0f}%)")
    return line + (f". WARNING: {meta['peak_note']}" if meta.get("peak_note") else "")
