"""Efficiency benchmark: training-step speed, inference speed, memory, FLOPs and MFU of every model by length.

    python -m lra_bench.bench [models=[mega,transformer] lengths=[1024,4096] batch=2 device=cuda precision=bf16 ...]
    python -m lra_bench.bench hydra.searchpath=[file:///path/to/my/conf] models=[my_model,transformer]
    make bench

Each model is built from its preset for ``preset_task`` (default Text, the Mega paper's and LRA's speed/memory
setting; ``model_configs.py``: a model without a preset for the task, e.g. a user's own on ``hydra.searchpath``,
is built from ``task=<task> model=<name>``, and the output says so), sized to the cell's length (position tables
and the mechanisms that size things by the length), and runs on random inputs in training mode with the preset's
dropouts. Three Transformers: ``transformer`` (the preset,
``scaled_dot_product_attention``; with its attention dropout 0.1 PyTorch runs SDPA's math kernel on CPU),
``transformer_vanilla`` (explicit softmax(QK^T)V, the LRA and Mega papers' baseline) and ``transformer_fused``
(the preset without attention dropout, so SDPA takes its fused flash kernel: the fastest Transformer here). Every cell (model x length) runs in its own
process: on CPU its memory is the step's own peak (peak RSS minus the RSS before the first step: the ~250 MB of
libraries are the same for every model and would flatten the ratios; the raw peak RSS is kept too), on CUDA
the allocator's peak. Timing: ``warmup`` steps, then the median of ``repeats`` steps with their min-max range
(``spread.py``: noisy cells and ratios that do not order their two cells are flagged).

A cell whose time or process memory, predicted from the model's previous lengths with their measured growth
(``budget.py``), would exceed the budget is skipped and marked, as is one that runs over
``budget.timeout_seconds``, fails or is killed: the run goes on.

FLOPs per step: what the implementation executes in matmuls (complex ones 4x real) and FFTs, forward and
backward, counted by ``FlopCounterMode`` with the formulas of ``flops.py`` (which also holds the hand counts the
tests check it against). Elementwise work (softmax, norms, activations) is not counted. MFU = FLOPs / median step
time / the peak fp32 matmul throughput (``peak.py``: measured in a fresh process before the first cell and after
the last, both printed); an MFU above 100 % is a bug in one of the two and is printed as such, never as a figure.

Outputs in ``out_dir``: results.csv, results.json, results.md (the table with speed and memory ratios against
both Transformers, laid out like the Mega paper's columns; the LRA paper's efficiency table shape, speed and
memory relative to the Transformer at 1K-4K beside its published values (``published_efficiency.py``); and
every target with its measured ratio),
time_vs_length.png and memory_vs_length.png; with ``logger=wandb`` a W&B run (job_type bench) gets the table
and the plots.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from lra_bench.benchmarks.published_efficiency import (
    MEGA_TABLE_2_4K,
    lra_memory_x,
    lra_row,
    lra_slower_at_4k,
    lra_speed_x,
)
from lra_bench.benchmarks.spread import NOISY, is_noisy, order_unclear, relative_spread, tokens_range

log = logging.getLogger("lra_bench.benchmarks.bench")

QUADRATIC = {"mega", "transformer", "transformer_vanilla", "transformer_fused", "synthesizer"}
# LRA's efficient Transformers and Luna: each at 4K as fast as the SDPA Transformer, unless LRA measured it slower
LRA_MODELS = ("local", "sparse_transformer", "longformer", "linformer", "reformer", "sinkhorn", "synthesizer", "bigbird",
              "linear_transformer", "performer", "luna")
# ratios are computed against each of these; the tables show the first two (the paper's baselines)
REFERENCES = ("transformer", "transformer_vanilla", "transformer_fused")
# (model, reference, length, kind, goal): Mega issue / paper claims, CPU targets of the benchmark issue
TARGETS = (
    ("mega_chunk", "transformer", 4096, "speed", 2.0),
    ("mega_chunk", "transformer", 16384, "speed", 6.0),
    ("mega_chunk", "transformer_vanilla", 4096, "speed", 5.5),
    ("mega_chunk", "transformer_vanilla", 4096, "memory", 0.13),
    ("mega_chunk", "transformer_fused", 4096, "speed", 2.0),  # the same speed goals against the fastest Transformer
    ("mega_chunk", "transformer_fused", 16384, "speed", 6.0),
)


# --- one cell (child process) --------------------------------------------------------------------

def measure_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: build, time training and inference steps, measure memory and FLOPs."""
    import torch
    import torch.nn.functional as F

    from lra_bench.benchmarks.cells import time_step
    from lra_bench.benchmarks.model_configs import build_net
    from lra_bench.benchmarks.process_memory import current_rss_mb, peak_rss_mb, reset_peak_rss

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    net, task = build_net(spec["overrides"], spec["searchpath"])
    net = net.to(device).train()
    B, L = spec["batch"], spec["length"]
    high = int(task.vocab_size) if task.input == "tokens" else 256
    low = 1 if task.input == "tokens" and task.get("padding_idx", 0) == 0 else 0
    docs = 2 if task.pair else 1
    inputs = []
    for _ in range(docs):
        inputs += [torch.randint(low, high, (B, L), device=device), torch.full((B,), L, device=device)]
    labels = torch.randint(0, int(task.num_classes), (B,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16")

    def train_step() -> None:
        with autocast:
            loss = F.cross_entropy(net(*inputs).float(), labels)
        loss.backward()
        net.zero_grad(set_to_none=True)

    base_rss = current_rss_mb()  # the built model and inputs; the step's own memory is what grows above it
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = time_step(train_step, spec["warmup"], spec["repeats"], device)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = max(peak_rss_mb() - base_rss, 0.0)
    row: dict[str, Any] = {
        "train_s": train["median_s"], "train_min_s": train["min_s"], "train_max_s": train["max_s"], "repeats": spec["repeats"],
        "tokens_per_s": B * L * docs / train["median_s"], "memory_mb": memory, "peak_rss_mb": peak_rss_mb(),
        "params": sum(p.numel() for p in net.parameters()),
        "params_mb": sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20,
        # what the process held before the step (CUDA: the allocator's peak already counts it)
        "held_mb": base_rss if device.type == "cpu" else 0.0,
    }
    if spec["inference"]:
        net.eval()

        def infer() -> None:
            with torch.no_grad(), autocast:
                net(*inputs)

        timing = time_step(infer, 1, spec["repeats"], device)
        row |= {"infer_s": timing["median_s"], "infer_min_s": timing["min_s"], "infer_max_s": timing["max_s"]}
        row["infer_tokens_per_s"] = B * L * docs / row["infer_s"]
        net.train()
    if spec["flops"]:
        from lra_bench.benchmarks.flops import count_step_flops

        row["flops_per_step"] = count_step_flops(train_step)
    return row


# --- the grid (parent process) ---------------------------------------------------------------------

def resolve_device(cfg) -> str:
    """``device: auto`` is CUDA where there is one."""
    import torch

    return cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def searchpath(cfg) -> list[str]:
    """Config search path for the models: ``searchpath`` in the bench config plus a running app's
    ``hydra.searchpath=[...]`` (where a user's own model configs live)."""
    from lra_bench.config import hydra_runtime

    runtime = hydra_runtime()
    return list(dict.fromkeys([*(cfg.get("searchpath") or []), *((runtime.searchpath if runtime is not None else None) or [])]))


def run_grid(cfg, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Every model x length cell, each in its own process, skipping what the budget predicts will not fit.
    ``notes`` collects what the output must say (presets a model was not built from, models not found)."""
    import psutil
    import torch
    from rich.progress import Progress

    from lra_bench.benchmarks.budget import skip_reason
    from lra_bench.benchmarks.cells import run_cell
    from lra_bench.benchmarks.model_configs import length_overrides, parameter_megabytes, resolve
    from lra_bench.models.options.check import check_model_options

    notes = [] if notes is None else notes
    device = resolve_device(cfg)
    if cfg.budget.memory_mb is not None:
        memory_budget = float(cfg.budget.memory_mb)
    elif device == "cuda":
        memory_budget = 0.7 * torch.cuda.get_device_properties(0).total_memory / 2**20
    else:
        memory_budget = 0.7 * psutil.virtual_memory().total / 2**20
    steps_per_cell = cfg.warmup + cfg.repeats + (1 + cfg.repeats) * 0.4 * bool(cfg.inference) + bool(cfg.flops)
    paths = searchpath(cfg)
    rows: list[dict[str, Any]] = []
    grid = [(m, L) for m in cfg.models for L in sorted(cfg.lengths)]
    with Progress(transient=False) as progress:
        bar = progress.add_task("benchmark", total=len(grid))
        for model in cfg.models:
            history: list[dict] = []
            try:
                resolved, composed = resolve(model, cfg.preset_task, list(cfg.model_overrides), paths)
                check_model_options(composed)  # a bad model_overrides value: one line, before any cell is built
                unbuildable = None
            except Exception as e:  # an unknown model or a broken config: its cells are marked, the run goes on
                resolved, composed, unbuildable = None, None, f"not built: {str(e).splitlines()[0][:200]}"
                notes.append(f"{model}: {unbuildable}")
            if resolved is not None and resolved.note:
                notes.append(resolved.note)
                progress.console.print(f"note: {resolved.note}")
            for length in sorted(cfg.lengths):
                progress.update(bar, description=f"{model} L={length}")
                row = {"model": model, "length": length, "batch": cfg.batch, "device": device, "precision": cfg.precision}
                if resolved is None:
                    row["skipped"] = unbuildable
                else:
                    overrides = [*resolved.overrides, *length_overrides(composed, length), *cfg.model_overrides]
                    params_mb = parameter_megabytes(overrides, paths)
                    available = psutil.virtual_memory().available / 2**20 if device == "cpu" else memory_budget
                    reason, predicted = skip_reason(history, length, quadratic=model in QUADRATIC, steps=steps_per_cell,
                                                    cell_seconds=cfg.budget.cell_seconds, memory_mb=memory_budget,
                                                    params_mb=params_mb, available_mb=available)
                    if reason is not None:  # predictions kept for an explicitly labelled extrapolation
                        row |= {"skipped": reason, **predicted}
                    else:
                        spec = {"model": model, "overrides": overrides, "searchpath": paths, "length": length,
                                "batch": cfg.batch, "device": device, "precision": cfg.precision, "warmup": cfg.warmup,
                                "repeats": cfg.repeats, "inference": cfg.inference, "flops": cfg.flops}
                        row |= run_cell("lra_bench.benchmarks.bench", spec, cfg.budget.timeout_seconds)
                history.append(row)
                rows.append(row)
                shown = row.get("skipped") or f"{row['tokens_per_s']:,.0f} tokens/s, {row['memory_mb']:,.0f} MB"
                progress.console.print(f"{model:>20} L={length:<6} {shown}")
                progress.advance(bar)
    return rows


def mfu_bug(flops_per_s: float, peak_flops: float) -> str:
    """The reason an MFU above 100 % is not a figure."""
    return (f"bug: counted {flops_per_s / 1e9:,.1f} GFLOP/s > the measured peak {peak_flops / 1e9:,.1f} GFLOP/s: "
            f"the FLOP count is too high or the peak too low")


def add_ratios(rows: list[dict], peak_flops: float | None) -> None:
    """Speed and memory ratios against both Transformers at the same length, and MFU; with the spread flags:
    ``noisy`` cells and ``speed_vs_<ref>_unclear`` ratios (``spread.py``). An MFU above 100 % is not stored as a
    figure: ``mfu`` is None and ``mfu_flag`` says why."""
    by = {(r["model"], r["length"]): r for r in rows if "skipped" not in r}
    for r in rows:
        if "skipped" in r:
            continue
        if r.get("train_min_s") is not None:
            r["train_spread"] = relative_spread(r)
            r["noisy"] = is_noisy(r)
        if r.get("flops_per_step") and peak_flops:
            r["flops_per_s"] = r["flops_per_step"] / r["train_s"]
            r["mfu"] = r["flops_per_s"] / peak_flops
            if r["mfu"] > 1.0:
                r["mfu"], r["mfu_flag"] = None, mfu_bug(r["flops_per_s"], peak_flops)
        for ref in REFERENCES:
            base = by.get((ref, r["length"]))
            if base:
                r[f"speed_vs_{ref}"] = r["tokens_per_s"] / base["tokens_per_s"]
                r[f"speed_vs_{ref}_unclear"] = order_unclear(r, base)
                if base["memory_mb"] > 0:
                    r[f"memory_vs_{ref}"] = r["memory_mb"] / base["memory_mb"]


def targets_for(models: list[str]) -> list[tuple[str, str, int, str, float, str | None]]:
    """(model, reference, length, kind, goal, note) for the models in this run: the fixed Mega-chunk targets, then
    issue 12's (each LRA model at 4K as fast as the SDPA Transformer, or as slow as LRA measured it) and
    issue 13's (S5 and LRU as fast as S4D at 4K: they are diagonal recurrences too)."""
    out = [(*t, None) for t in TARGETS if t[0] in models]  # goals only for the models they concern
    for m in models:
        if m in LRA_MODELS:
            slower = lra_slower_at_4k(m)
            out.append((m, "transformer", 4096, "speed", slower or 1.0,
                        f"LRA measured {slower}x of its Transformer at 4K" if slower else None))
    for m in ("s5", "lru"):
        if m in models and "s4d" in models:
            out.append((m, "s4d", 4096, "speed", 1.0, None))
    return out


def check_targets(rows: list[dict]) -> list[dict[str, Any]]:
    """Each target with its ratio from this run's two cells; when the reference cell was skipped by the budget,
    also the ratio against the reference's extrapolated figures (its measured growth), labelled as such."""
    by = {(r["model"], r["length"]): r for r in rows}
    out = []
    for model, ref, length, kind, goal, why in targets_for(list(dict.fromkeys(r["model"] for r in rows))):
        r, base = by.get((model, length), {}), by.get((ref, length), {})
        value = None
        if "skipped" not in r and "skipped" not in base and r and base:
            key = "tokens_per_s" if kind == "speed" else "memory_mb"
            value = r[key] / base[key] if base[key] > 0 else None
        met = value is not None and (value >= goal if kind == "speed" else value <= goal)
        note, extrapolated = why, None
        if value is None:
            note = "; ".join(n for n in (r.get("skipped") or base.get("skipped") or "not in the grid", why) if n)
            if "skipped" not in r and r and base.get("predicted_train_s"):
                if kind == "speed":
                    extrapolated = base["predicted_train_s"] / r["train_s"]
                elif base.get("predicted_memory_mb"):
                    extrapolated = r["memory_mb"] / base["predicted_memory_mb"]
        out.append({"claim": f"{model} {kind} vs {ref} at {length}", "goal": f"{'>=' if kind == 'speed' else '<='} {goal}x",
                    "measured": value, "met": met, "note": note, "extrapolated": extrapolated})
    return out


def ratio_text(r: dict, kind: str) -> str:
    """The ratios against the SDPA / vanilla Transformer, a speed ratio whose cells' ranges overlap marked ``?``."""
    def one(ref: str) -> str:
        key = f"{kind}_vs_{ref}"
        return f"{r[key]:.2f}x" + ("?" if r.get(f"{key}_unclear") else "") if key in r else "–"
    return "/".join(one(ref) for ref in ("transformer", "transformer_vanilla"))


def speed_text(r: dict) -> str:
    """Median tokens/s with the min-max range of the repeats, ``noisy`` when the range is wide."""
    if r.get("train_min_s") is None:
        return f"{r['tokens_per_s']:,.0f}"
    lo, hi = tokens_range(r)
    return f"{r['tokens_per_s']:,.0f} [{lo:,.0f}–{hi:,.0f}]" + (" noisy" if r.get("noisy") else "")


def length_table(title: str, key: str, kind: str, models: list[str], lengths: list[int], by: dict) -> list[str]:
    """Models x lengths of ``key``, each cell with its ``kind`` ratios against the SDPA / vanilla Transformer;
    speeds with their min-max range."""
    out = [title, "", "| model | " + " | ".join(f"L={n}" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for m in models:
        cells = []
        for n in lengths:
            r = by.get((m, n), {})
            if "skipped" in r:
                cells.append("skipped")
            elif r:
                value = speed_text(r) if key == "tokens_per_s" else f"{r[key]:,.0f}"
                cells.append(f"{value} ({ratio_text(r, kind)})")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def growth(r0: dict, r1: dict, key: str) -> float | None:
    """The exponent g of key ~ L^g between two measured cells (1: linear, 2: quadratic)."""
    if "skipped" in r0 or "skipped" in r1 or not r0 or not r1 or r0.get(key, 0) <= 0 or r1.get(key, 0) <= 0:
        return None
    return math.log(r1[key] / r0[key]) / math.log(r1["length"] / r0["length"])


def lra_table(models: list[str], lengths: list[int], by: dict) -> list[str]:
    """The LRA paper's efficiency table shape: speed and memory relative to the Transformer at 1K-4K, ours
    (vs the SDPA / vanilla Transformer of this run) beside LRA's published ratios, and the memory growth."""
    shown = [m for m in models if m in ("transformer", "transformer_vanilla", *LRA_MODELS)]
    ls = [n for n in lengths if n <= 4096]
    if not shown or not ls:
        return []

    def ratio(m: str, n: int, kind: str) -> str:
        r = by.get((m, n), {})
        if "skipped" in r:
            return "skipped"
        return " / ".join(f"{r[k]:.2f}x" if k in r else "–" for k in (f"{kind}_vs_transformer", f"{kind}_vs_transformer_vanilla"))

    def published(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}x"

    head = "| model | " + " | ".join(f"L={n} ours | L={n} LRA" for n in ls)
    rule = "|---|" + "---|---|" * len(ls)
    out = ["", "LRA's efficiency table shape (speed and memory relative to the Transformer; ours: x SDPA / x vanilla "
           "Transformer of this run; LRA: Tay et al. 2021, Section 3.4, Text, batch 32, TPU v3, vs its Transformer, an "
           "explicit softmax one like our vanilla; LRA's memory ratios are derived from its GB; Mega: its Table 2 at 4K):",
           "", "Speed:", "", head + " | Mega 4K |", rule + "---|"]
    for m in shown:
        cells = [f"{ratio(m, n, 'speed')} | {published(lra_speed_x(m, n), 1)}" for n in ls]
        out.append(f"| {m} | " + " | ".join(cells) + f" | {published(MEGA_TABLE_2_4K.get(m, (None,))[0], 1)} |")
    out += ["", "Memory (growth: the exponent g of memory ~ L^g between the shortest and longest length shown; 1 = linear):",
            "", head + " | growth ours | growth LRA (1K-4K) | Mega 4K |", rule + "---|---|---|"]
    for m in shown:
        cells = [f"{ratio(m, n, 'memory')} | {published(lra_memory_x(m, n), 2)}" for n in ls]
        g = growth(by.get((m, ls[0]), {}), by.get((m, ls[-1]), {}), "memory_mb") if len(ls) > 1 else None
        row = lra_row(m)
        g_lra = math.log(row.memory_gb[3] / row.memory_gb[0]) / math.log(4) if row else None
        mega = MEGA_TABLE_2_4K.get(m, (None, None))[1]
        out.append(f"| {m} | " + " | ".join(cells) + f" | {'–' if g is None else f'{g:.2f}'} | "
                   f"{'–' if g_lra is None else f'{g_lra:.2f}'} | {published(mega, 2)} |")
    return out


def peak_line(meta: dict) -> str:
    """Both peak measurements where the run has them (``peak.py``), else the one figure."""
    from lra_bench.benchmarks.peak import describe

    if meta.get("peak_flops") is None:
        return "peak matmul not measured (flops=false)"
    return describe(meta) if "peak_start_flops" in meta else f"peak matmul {meta['peak_flops'] / 1e9:,.0f} GFLOP/s"


def ratio_hint(models: list[str]) -> str | None:
    """How to get the ratio columns when a reference they divide by is not in the grid (they show – then)."""
    missing = [ref for ref in REFERENCES[:2] if ref not in models]
    if not missing:
        return None
    return (f"The ratio columns divide by {' and '.join(REFERENCES[:2])} measured in the same run; "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this grid, so {'its' if len(missing) == 1 else 'their'} "
            f"ratios show –. Add {'it' if len(missing) == 1 else 'them'}: models=[{','.join([*models, *missing])}].")


def markdown(rows: list[dict], targets: list[dict], meta: dict) -> str:
    lengths = sorted({r["length"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["length"]): r for r in rows}
    out = [f"Benchmark on {meta['device']} ({meta['precision']}), task preset `{meta['task']}`, batch {meta['batch']}, "
           f"median of {meta['repeats']} steps after {meta['warmup']} warm-up; memory = the step's own peak "
           f"({'CUDA allocator' if meta['device'] == 'cuda' else 'peak RSS minus the RSS before the step'}); "
           f"{peak_line(meta)}.", ""]
    out += [f"- note: {n}" for n in meta.get("notes", [])] + ([""] if meta.get("notes") else [])
    hint = ratio_hint(models)
    out += [hint, ""] if hint else []
    out += length_table(f"Training tokens/s, median [slowest–fastest of the {meta['repeats']} timed steps] (speed x vs "
                        f"SDPA Transformer / vanilla Transformer; `?`: the two cells' ranges overlap, the ratio does not "
                        f"order them; `noisy`: range > {100 * NOISY:.0f}% of the median):", "tokens_per_s", "speed",
                        models, lengths, by)
    out += [""] + length_table("Training-step memory MB (memory x vs SDPA / vanilla Transformer):", "memory_mb", "memory",
                               models, lengths, by)
    if 4096 in lengths:
        out += ["", "At L = 4096, as the Mega paper's columns (paper: vs its Transformer, on A100):", "",
                "| model | speed x (SDPA) | memory x (SDPA) | speed x (vanilla) | memory x (vanilla) | paper speed | paper memory |",
                "|---|---|---|---|---|---|---|"]
        for m in models:
            r = by.get((m, 4096), {})
            fmt = lambda k: f"{r[k]:.2f}x" if k in r else ("skipped" if "skipped" in r else "–")  # noqa: E731
            paper = MEGA_TABLE_2_4K.get(m, ("–", "–"))
            out.append(f"| {m} | {fmt('speed_vs_transformer')} | {fmt('memory_vs_transformer')} | "
                       f"{fmt('speed_vs_transformer_vanilla')} | {fmt('memory_vs_transformer_vanilla')} | {paper[0]} | {paper[1]} |")
    out += lra_table(models, lengths, by)
    out += ["", "Inference tokens/s, FLOPs per training step and MFU:", "",
            "| model | L | inference tokens/s | GFLOPs / step | MFU |", "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" not in r:
            inf = f"{r['infer_tokens_per_s']:,.0f}" if "infer_tokens_per_s" in r else "–"
            gf = f"{r['flops_per_step'] / 1e9:,.1f}" if r.get("flops_per_step") else "–"
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else r.get("mfu_flag", "–")
            out.append(f"| {r['model']} | {r['length']} | {inf} | {gf} | {mfu} |")
    out += ["", "| target | goal | measured | met |", "|---|---|---|---|"] if targets else []
    for t in targets:
        measured = f"{t['measured']:.2f}x" if t["measured"] is not None else f"not measured ({t['note']})"
        if t.get("extrapolated") is not None:
            measured += f"; about {t['extrapolated']:.1f}x against the reference's extrapolated figure"
        if t.get("note") and t["measured"] is not None:
            measured += f" ({t['note']})"
        out.append(f"| {t['claim']} | {t['goal']} | {measured} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(out) + "\n"


def plot_title(meta: dict) -> str:
    """What a time or memory figure was measured on: device, precision, batch and the task preset."""
    return (f"{meta['device']}, {meta['precision']}, batch {meta['batch']}, preset {meta['task']} "
            f"(median of {meta['repeats']} steps)")


def plot(rows: list[dict], out: Path, meta: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, label, name in (("train_s", "training step time (s), median, bars: min-max", "time_vs_length.png"),
                             ("memory_mb", "training step memory (MB)", "memory_vs_length.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for model in dict.fromkeys(r["model"] for r in rows):
            cells = [r for r in rows if r["model"] == model and "skipped" not in r and r.get(key, 0) > 0]
            if cells:  # step times with the min-max range of their repeats
                lengths, values = [r["length"] for r in cells], [r[key] for r in cells]
                spread = [[r[key] - r.get(f"{key[:-2]}_min_s", r[key]) for r in cells],
                          [r.get(f"{key[:-2]}_max_s", r[key]) - r[key] for r in cells]] if key == "train_s" else None
                ax.errorbar(lengths, values, yerr=spread, marker="o", capsize=3, label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.set_title(plot_title(meta), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def write_outputs(rows: list[dict], meta: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    targets = check_targets(rows)
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("model", "length"), k))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "targets": targets}, indent=2, default=str))
    (out / "results.md").write_text(markdown(rows, targets, meta))
    pngs = plot(rows, out, meta)
    return {"csv": out / "results.csv", "json": out / "results.json", "md": out / "results.md", "pngs": pngs}


def log_to_wandb(cfg, rows: list[dict], files: dict) -> None:
    """With logger=wandb: one run (job_type bench) with the results table and the plots."""
    from hydra.utils import instantiate

    from lra_bench.training.loggers import finish_wandb

    logger_cfg = (cfg.get("logger") or {}).get("wandb")
    if logger_cfg is None:
        return
    import wandb

    try:
        logger = instantiate(logger_cfg, name=f"bench-{cfg.preset_task}", job_type="bench", group=logger_cfg.get("group") or "bench")
        run = logger.experiment
        columns = sorted({k for r in rows for k in r})
        run.log({"bench/results": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows]),
                 **{f"bench/{p.stem}": wandb.Image(str(p)) for p in files["pngs"]}})
        from lra_bench.reporting.wandb_tables import log_bench_tables

        log_bench_tables(run, rows)  # the speed/memory-vs-length charts the dashboard shows
        finish_wandb(0)
    except Exception as e:  # W&B trouble never loses the local results
        log.warning("logging the benchmark to W&B failed: %s", e)
        finish_wandb(1)


def run(cfg) -> dict[str, Any]:
    from lra_bench.benchmarks.peak import compare, describe, peak_in_child

    started = time.time()
    notes: list[str] = []
    device = resolve_device(cfg)
    sizes, repeats = cfg.peak.sizes, cfg.peak.repeats
    # MFU's denominator, before the first cell and after the last, each in a fresh process; no FLOPs, no MFU
    peak_start = peak_in_child(device, sizes, repeats) if cfg.flops else None
    rows = run_grid(cfg, notes)
    peak = {"peak_flops": None}
    if peak_start is not None:
        peak = compare(peak_start, peak_in_child(device, sizes, repeats), cfg.peak.margin)
        print(describe(peak))
    add_ratios(rows, peak["peak_flops"])
    meta = {"task": cfg.preset_task, "device": device, "precision": cfg.precision, "batch": cfg.batch, "warmup": cfg.warmup,
            "repeats": cfg.repeats, **peak, "cpus": os.cpu_count(), "wall_s": time.time() - started,
            "notes": notes}
    files = write_outputs(rows, meta, Path(cfg.out_dir))
    log_to_wandb(cfg, rows, files)
    print(files["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in [files['csv'], files['json'], files['md'], *files['pngs']])} "
          f"in {time.time() - started:.0f} s")
    return {"rows": rows, "meta": meta, "files": files}


def main() -> None:
    from lra_bench.benchmarks.cells import serve_cell

    from lra_bench.benchmarks.peak import measure_peak

    if serve_cell(sys.argv[1:], lambda spec: measure_peak(spec) if spec.get("kind") == "peak" else measure_cell(spec)):
        return
    import hydra

    from lra_bench.config import CONFIG_PATH, exit_on_lra_error

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="bench")
    @exit_on_lra_error
    def entry(cfg) -> None:
        run(cfg)

    entry()


if __name__ == "__main__":
    main()
