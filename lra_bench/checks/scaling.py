"""Cost: operations, time and memory of one training step (forward, backward, AdamW update) by sequence length, and
their growth exponents.

One batch of one full-length sequence (two for a pair task) per length; the model as checked (its preset for the
task, sized to each length). Full mode runs each length in a fresh process (``lra_bench.benchmarks.cells``), so its
memory is that step's own: on CPU the peak RSS minus the RSS before the first step, on CUDA the allocator's peak.
Quick mode measures in this process (a rough figure: freed memory the allocator keeps is not counted again).

- Operations: the step's FLOPs counted by ``FlopCounterMode`` (with the benchmark's formulas for FFTs and CPU SDPA,
  ``lra_bench.benchmarks.flops.flop_formulas``). A count, not a timing: the same on a busy machine as on an idle one,
  so its exponent is the figure to trust for "linear or quadratic" (ops it cannot see, an elementwise scan, are not
  in it).
- Time: the median of ``repeats`` steps after ``warmup``, in process CPU time on CPU (time spent waiting for a core on
  a loaded machine is not counted; wall time on CUDA). When the repeats at some length spread by more than ``NOISY``
  of their median, the row says the figures are too noisy to fit.

The exponent is the least-squares slope of log(figure) against log(L): about 1 for a linear model, 2 for a quadratic
one (small lengths and small models show less: fixed costs dominate there). No threshold: the figures are for
reading; a length that fails to run fails the check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F

from lra_bench.checks import FAIL, INFO, CheckResult, fmt, one_line
from lra_bench.checks.build import Target, build, model_config

LENGTHS = (1024, 2048, 4096)
LONG_LENGTHS = (8192, 16384)
QUICK_LENGTHS = (128, 256, 512)
CELL_TIMEOUT_S = 600
REPEATS = 5   # timed steps per length (after one warm-up); the median is fitted
NOISY = 0.5   # repeats spreading by more than this fraction of their median: too noisy to fit


def measure(target: Target, length: int, device: str = "cpu", warmup: int = 1, repeats: int = REPEATS) -> dict[str, Any]:
    """One length: {length, time_s, memory_mb} of a training step of ``target`` at ``length`` tokens."""
    from lra_bench.benchmarks.cells import time_step
    from lra_bench.benchmarks.flops import count_step_flops
    from lra_bench.benchmarks.process_memory import current_rss_mb, peak_rss_mb, reset_peak_rss
    from lra_bench.training.optim import build_param_groups

    cfg = model_config(target, target.task, length)
    dev = torch.device(device)
    net = build(cfg).to(dev).train()
    optimizer = torch.optim.AdamW(build_param_groups(net, lr=1e-4, weight_decay=0.0))
    high = int(cfg.task.vocab_size) if cfg.task.input == "tokens" else 256
    low = 1 if cfg.task.input == "tokens" else 0
    args: list[torch.Tensor] = []
    for _ in range(2 if cfg.task.pair else 1):
        args += [torch.randint(low, high, (1, length), device=dev), torch.tensor([length], device=dev)]
    labels = torch.zeros(1, dtype=torch.long, device=dev)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(*args).float(), labels).backward()
        optimizer.step()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev) / 2**20
        timing = time_step(step, warmup, repeats, dev)
    else:
        reset_peak_rss()
        before = current_rss_mb()
        timing = time_step(step, warmup, repeats, clock=time.process_time)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
    flops = count_step_flops(step)
    return {"length": length, "time_s": timing["median_s"], "spread": (timing["max_s"] - timing["min_s"]) / max(timing["median_s"], 1e-9),
            "memory_mb": max(peak - before, 0.0), "flops": float(flops)}


def exponent(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(y) on log(L); None with fewer than two positive points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def short(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def scaling(target: Target, lengths: Sequence[int], in_process: bool, device: str = "cpu") -> list[CheckResult]:
    """The three rows (operations, time, memory); every length in a fresh process unless ``in_process``."""
    from lra_bench.benchmarks.cells import run_cell

    cells: list[dict[str, Any]] = []
    for length in lengths:
        if in_process:
            try:
                cells.append(measure(target, length, device))
            except Exception as e:  # noqa: BLE001 - a length that does not run is the finding
                cells.append({"length": length, "error": one_line(e)})
        else:
            spec = {"target": asdict(target), "length": length, "device": device}
            cell = run_cell("lra_bench.check_model", spec, CELL_TIMEOUT_S)
            cells.append({"length": length, **cell})
            if "skipped" in cell:  # longer lengths would take longer still
                break
    results = []
    for key, label in (("flops", "operations"), ("time_s", "time"), ("memory_mb", "memory")):
        done = [(c["length"], c[key]) for c in cells if key in c]
        shown = ", ".join(f"{short(length)} {amount(key, value)}" for length, value in done)
        slope = exponent(done)
        figure = f"exponent {slope:.2f}" if slope is not None else "-"
        errors = [f"{short(c['length'])}: {c.get('error') or c.get('skipped')}" for c in cells if "error" in c or "skipped" in c]
        status = FAIL if any("error" in c for c in cells) else INFO
        where = "this process" if in_process else "a fresh process per length"
        detail = f"{shown} ({where})" + (f"; not measured: {'; '.join(errors)}" if errors else "")
        spread = max((c.get("spread", 0.0) for c in cells if key in c), default=0.0)
        if key == "time_s" and spread > NOISY:
            figure += " (noisy)"
            detail += (f"; the repeats at one length spread by {spread:.0%} of their median: too noisy to fit on this "
                       "machine now (read the operations row, or rerun on an idle machine)")
        threshold = "none: ~1 linear, ~2 quadratic"
        results.append(CheckResult(f"cost: {label} of a training step", status, figure, detail, threshold,
                                   "the model fails at this length (see the error)" if status == FAIL else ""))
    return results


def amount(key: str, value: float) -> str:
    if key == "flops":
        return f"{fmt(value / 1e9)} GFLOP"
    return f"{fmt(value * 1000)} ms" if key == "time_s" else f"{fmt(value)} MB"
