"""Ours beside a reference package, cell by cell: the protocol of ``bench-attention`` and ``bench-ssm``.

A *pair* is a module ``lra_bench/benchmarks/references/<name>.py`` whose ``build(length, d_model, n_heads, seed)``
returns ``(ours, theirs)``: two modules mapping x (B, L, D) -> (B, L, D), configured alike with matched weights.
A *cell* is one side of one pair (or one of our own models, for bench-ssm's S4D/S5/LRU comparison) at one length.
Every cell runs in a fresh process (``cells.run_cell``), so its memory is its own: it builds the module, takes a
random x (B, L, D) with ``requires_grad`` (as a layer inside a network sees it), and times forward + backward of
``sum(y)``: ``warmup`` steps, then the median (min, max) of ``repeats``. Memory on CPU is the step's own peak
(peak RSS minus the RSS before the first step; the raw peak RSS is kept too), on CUDA the allocator's peak.
The lengths run in increasing order with the two sides of a pair next to each other, so both see the same machine
load; a side whose time, predicted from its smaller lengths, exceeds the cell budget is skipped (``budget.py``),
as is one that runs over the timeout, fails or is killed.

Ratios (ours over theirs: tokens/s, memory) are computed only between two cells of the same run: every row carries
the run's id, and a ratio whose other side is missing from this run says "reference not run" (or "skipped" with
the reason), never a number from another day.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDES = ("ours", "theirs")


# --- one cell (child process) --------------------------------------------------------------------

def reference_module(pair: str):
    return importlib.import_module(f"lra_bench.benchmarks.references.{pair}")


def installed_version(reference: str) -> str | None:
    """The installed version of ``package==version`` (the pairing module's REFERENCE), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(reference.split("==")[0])
    except PackageNotFoundError:
        return None


def forward_fn(net) -> Callable:
    """x -> net(x, None, ...): None for every further argument the module requires (ours may take (x, mask))."""
    params = list(inspect.signature(net.forward).parameters.values())[1:]
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    nones = (None,) * len(required)
    return lambda x: net(x, *nones)


def measure(net, forward: Callable, shape: tuple[int, int, int], device: str, warmup: int, repeats: int) -> dict[str, Any]:
    """Forward + backward of sum(forward(x)) for a random x of ``shape`` (B, L, D): timing and the step's memory."""
    import torch

    from lra_bench.benchmarks.cells import time_step
    from lra_bench.benchmarks.process_memory import current_rss_mb, peak_rss_mb, reset_peak_rss

    dev = torch.device(device)
    net = net.to(dev).train()
    x = torch.randn(*shape, device=dev, requires_grad=True)

    def step() -> None:
        y = forward(x)
        y = y[0] if isinstance(y, tuple) else y
        y.float().sum().backward()
        net.zero_grad(set_to_none=True)
        x.grad = None

    base = current_rss_mb()
    reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    timing = time_step(step, warmup, repeats, dev)
    memory = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else max(peak_rss_mb() - base, 0.0)
    B, L, _ = shape
    return {"train_s": timing["median_s"], "train_min_s": timing["min_s"], "train_max_s": timing["max_s"],
            "tokens_per_s": B * L / timing["median_s"], "memory_mb": memory, "peak_rss_mb": peak_rss_mb(),
            "held_mb": base if dev.type == "cpu" else 0.0, "params": sum(p.numel() for p in net.parameters()),
            "threads": torch.get_num_threads()}


def measure_pair_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: build one side of a pair and measure it (the other side is dropped before measuring)."""
    import gc

    import torch

    module = reference_module(spec["name"])
    torch.manual_seed(spec["seed"])
    ours, theirs = module.build(spec["length"], spec["d_model"], spec["n_heads"], seed=spec["seed"])
    net = ours if spec["side"] == "ours" else theirs
    del ours, theirs
    gc.collect()
    row = measure(net, forward_fn(net), (spec["batch"], spec["length"], spec["d_model"]), spec["device"],
                  spec["warmup"], spec["repeats"])
    return row | {"reference": module.REFERENCE, "reference_installed": installed_version(module.REFERENCE)}


# --- the grid (parent process) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One cell: ``kind`` (``pair`` or a command's own group), ``name``, ``side``, ``length`` and its child spec."""

    kind: str
    name: str
    side: str
    length: int
    spec: dict[str, Any]


def identity(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["kind"], row["name"], row["side"]


def run_cells(module: str, cells: Sequence[Cell], *, run: str, timeout: float, cell_seconds: float,
              memory_mb: float | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run ``cells`` in order, each as ``python -m module --cell <spec>``; rows carry ``run``.

    A side is skipped at a length where its time (or memory), predicted from its own smaller lengths, exceeds
    ``cell_seconds`` (``memory_mb``, default 70% of RAM), and at every length after a skipped one."""
    import psutil

    from lra_bench.benchmarks.budget import skip_reason
    from lra_bench.benchmarks.cells import run_cell

    budget_mb = memory_mb if memory_mb is not None else 0.7 * psutil.virtual_memory().total / 2**20
    history: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"run": run, "kind": cell.kind, "name": cell.name, "side": cell.side, "length": cell.length,
                               "batch": cell.spec.get("batch")}
        past = history.setdefault(identity(row), [])
        steps = cell.spec.get("warmup", 0) + cell.spec.get("repeats", 1)
        reason, predicted = skip_reason(past, cell.length, quadratic=False, steps=steps, cell_seconds=cell_seconds,
                                        memory_mb=budget_mb)
        if reason is not None:
            row |= {"skipped": reason, **predicted}
        else:
            row |= run_cell(module, cell.spec, timeout)
        past.append(row)
        rows.append(row)
        shown = row.get("skipped") or f"{row['tokens_per_s']:,.0f} tokens/s, {row['memory_mb']:,.0f} MB step memory"
        log(f"{cell.kind:>8} {cell.name:>12} {cell.side:>7} L={cell.length:<6} {shown}")
    return rows


def pair_cells(pairs: dict[str, tuple[int, int]], lengths: Sequence[int], *, batch: int, warmup: int, repeats: int,
               device: str, seed: int = 0) -> list[Cell]:
    """Both sides of every pair at every length, lengths in increasing order, the two sides of a pair adjacent.
    ``pairs``: name -> (d_model, n_heads)."""
    cells = []
    for length in sorted(lengths):
        for name, (d_model, n_heads) in pairs.items():
            for side in SIDES:
                spec = {"kind": "pair", "name": name, "side": side, "length": length, "batch": batch, "d_model": d_model,
                        "n_heads": n_heads, "warmup": warmup, "repeats": repeats, "device": device, "seed": seed}
                cells.append(Cell("pair", name, side, length, spec))
    return cells


# --- ratios from the same run ---------------------------------------------------------------------

def compare(rows: Sequence[dict[str, Any]], run: str, a: tuple[str, str, str], b: tuple[str, str, str],
            length: int, absent: str = "reference not run") -> dict[str, Any]:
    """a over b at ``length``: speed = tokens/s ratio, memory = step-memory ratio, from cells of run ``run`` only.
    Without a b cell in this run: ``note`` = ``absent``; a skipped side: ``note`` = why."""
    mine = {(identity(r), r["length"]): r for r in rows if r.get("run") == run}
    ra, rb = mine.get((a, length)), mine.get((b, length))
    out: dict[str, Any] = {"length": length, "speed": None, "memory": None, "note": None}
    if rb is None:
        out["note"] = absent
    elif ra is None:
        out["note"] = "not run"
    elif "skipped" in ra or "skipped" in rb:
        out["note"] = "skipped: " + "; ".join(f"{who} {r['skipped']}" for who, r in (("ours", ra), ("reference", rb))
                                              if "skipped" in r)
    else:
        out["speed"] = ra["tokens_per_s"] / rb["tokens_per_s"]
        out["memory"] = ra["memory_mb"] / rb["memory_mb"] if rb["memory_mb"] > 0 else None
    return out


def pair_ratios(rows: Sequence[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    """Ours over theirs for every pair and length that has an ``ours`` cell in run ``run``."""
    out = []
    for kind, name, side, length in sorted({(r["kind"], r["name"], r["side"], r["length"]) for r in rows
                                            if r.get("run") == run and r["kind"] == "pair" and r["side"] == "ours"},
                                           key=lambda t: (t[1], t[3])):
        out.append({"name": name, **compare(rows, run, (kind, name, "ours"), (kind, name, "theirs"), length)})
    return out


def target(claim: str, ratio: dict[str, Any] | None, goal: float) -> dict[str, Any]:
    """A speed target ``>= goal`` x, met only when both cells of this run were measured."""
    value = None if ratio is None else ratio["speed"]
    note = "not in the grid" if ratio is None else ratio["note"]
    return {"claim": claim, "goal": f">= {goal}x", "measured": value, "met": value is not None and value >= goal,
            "note": note}


def pair_targets(ratios: Sequence[dict[str, Any]], names: Sequence[str], references: dict[str, str],
                 length: int) -> list[dict[str, Any]]:
    """Each of ours at ``length`` no slower than its reference package (issues 12.5 and 13.6)."""
    by = {(r["name"], r["length"]): r for r in ratios}
    return [target(f"{name} (ours) tokens/s vs {references[name]} at {length}", by.get((name, length)), 1.0)
            for name in names]


# --- output ---------------------------------------------------------------------------------------

def fmt_ratio(value: float | None, note: str | None) -> str:
    return f"{value:.2f}x" if value is not None else (note or "–")


def cell_text(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "not run"
    if "skipped" in row:
        return "skipped"  # the reason is in the ratio column
    return f"{row[key]:,.0f}"


def pair_table(rows: Sequence[dict[str, Any]], ratios: Sequence[dict[str, Any]], run: str,
               references: dict[str, str]) -> list[str]:
    mine = {(identity(r), r["length"]): r for r in rows if r.get("run") == run}
    out = ["| ours vs reference | L | ours tokens/s | reference tokens/s | speed x | ours MB | reference MB | memory x |",
           "|---|---|---|---|---|---|---|---|"]
    for r in ratios:
        o, t = mine.get((("pair", r["name"], "ours"), r["length"])), mine.get((("pair", r["name"], "theirs"), r["length"]))
        memory = f"{r['memory']:.2f}x" if r["memory"] is not None else "–"
        out.append(f"| {r['name']} vs {references[r['name']]} | {r['length']} | {cell_text(o, 'tokens_per_s')} | "
                   f"{cell_text(t, 'tokens_per_s')} | {fmt_ratio(r['speed'], r['note'])} | {cell_text(o, 'memory_mb')} | "
                   f"{cell_text(t, 'memory_mb')} | {memory} |")
    return out


def target_table(targets: Sequence[dict[str, Any]]) -> list[str]:
    out = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for t in targets:
        measured = f"{t['measured']:.2f}x" if t["measured"] is not None else f"not measured ({t['note']})"
        out.append(f"| {t['claim']} | {t['goal']} | {measured} | {'yes' if t['met'] else 'no'} |")
    return out


def header(meta: dict[str, Any]) -> str:
    return (f"Run {meta['run']} on {meta['device']} ({meta['threads']} threads, {meta['cpus']} CPUs), batch {meta['batch']}, "
            f"forward + backward, median of {meta['repeats']} steps after {meta['warmup']} warm-up, one process per "
            f"cell; memory = the step's own peak ({'CUDA allocator' if meta['device'] == 'cuda' else 'peak RSS minus the RSS before the step'}). "
            "Every ratio divides two cells of this run.")


def write_results(out: Path, meta: dict[str, Any], rows: Sequence[dict[str, Any]], results: dict[str, Any],
                  markdown: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": list(rows), **results}, indent=2, default=str))
    (out / "results.md").write_text(markdown)
    return {"json": out / "results.json", "md": out / "results.md"}


# --- the command line shared by both commands ------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target-length", type=int, default=4096, help="the length of the 'no slower' targets")
    parser.add_argument("--d-model", type=int, default=None, help="D for every cell (default: each Text preset's)")
    parser.add_argument("--n-heads", type=int, default=None, help="H for every attention cell (default: the preset's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a cell's process is stopped")
    parser.add_argument("--cell-seconds", type=float, default=300.0, help="skip a cell predicted to take longer")
    parser.add_argument("--out", default=out)


def new_meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    return {"run": uuid.uuid4().hex[:12], "device": args.device, "batch": args.batch, "warmup": args.warmup,
            "repeats": args.repeats, "lengths": sorted(args.lengths), "target_length": args.target_length,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "started": time.time()}


def preset_dims(model: str, task: str = "text") -> tuple[int, int]:
    """(d_model, n_heads) of ``experiment=lra/<model>-<task>`` (n_heads 1 for a backbone without heads)."""
    from omegaconf import OmegaConf

    from lra_bench.benchmarks.model_configs import compose_train

    cfg = compose_train([f"experiment=lra/{model}-{task}"])
    return int(cfg.model.d_model), int(OmegaConf.select(cfg, "model.net.backbone.n_heads", default=1) or 1)
