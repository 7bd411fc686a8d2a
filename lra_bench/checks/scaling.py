"""Cost: time and memory of one training step (forward, backward, AdamW update) by sequence length, and their
growth exponent.

One batch of one full-length sequence (two for a pair task) per length; the model as checked (its preset for the
task, sized to each length). Full mode runs each length in a fresh process (``lra_bench.benchmarks.cells``), so its
memory is that step's own: on CPU the peak RSS minus the RSS before the first step, on CUDA the allocator's peak.
Quick mode measures in this process (a rough figure: freed memory the allocator keeps is not counted again).
Time: the median of ``repeats`` steps after ``warmup``. The exponent is the least-squares slope of log(figure)
against log(L): about 1 for a linear model, 2 for a quadratic one (small lengths and small models show less:
fixed costs dominate there). No threshold: the figures are for reading; a length that fails to run fails the check.
"""

from __future__ import annotations

import math
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


def measure(target: Target, length: int, device: str = "cpu", warmup: int = 1, repeats: int = 3) -> dict[str, Any]:
    """One length: {length, time_s, memory_mb} of a training step of ``target`` at ``length`` tokens."""
    from lra_bench.benchmarks.cells import time_step
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
    else:
        reset_peak_rss()
        before = current_rss_mb()
    timing = time_step(step, warmup, repeats, dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
    return {"length": length, "time_s": timing["median_s"], "memory_mb": max(peak - before, 0.0)}


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
    """The two rows (time, memory); every length in a fresh process unless ``in_process``."""
    from lra_bench.benchmarks.cells import run_cell

    cells: list[dict[str, Any]] = []
    for length in lengths:
        if in_process:
            try:
                cells.append(measure(target, length, device, warmup=1, repeats=2))
            except Exception as e:  # noqa: BLE001 - a length that does not run is the finding
                cells.append({"length": length, "error": one_line(e)})
        else:
            spec = {"target": asdict(target), "length": length, "device": device}
            cell = run_cell("lra_bench.check_model", spec, CELL_TIMEOUT_S)
            cells.append({"length": length, **cell})
            if "skipped" in cell:  # longer lengths would take longer still
                break
    results = []
    for key, unit, label in (("time_s", "s", "time"), ("memory_mb", "MB", "memory")):
        done = [(c["length"], c[key]) for c in cells if key in c]
        shown = ", ".join(f"{short(length)} {fmt(value * 1000) + ' ms' if unit == 's' else fmt(value) + ' MB'}" for length, value in done)
        slope = exponent(done)
        figure = f"exponent {slope:.2f}" if slope is not None else "-"
        errors = [f"{short(c['length'])}: {c.get('error') or c.get('skipped')}" for c in cells if "error" in c or "skipped" in c]
        status = FAIL if any("error" in c for c in cells) else INFO
        where = "this process" if in_process else "a fresh process per length"
        detail = f"{shown} ({where})" + (f"; not measured: {'; '.join(errors)}" if errors else "")
        results.append(CheckResult(f"cost: {label} of a training step", status, figure, detail))
    return results
