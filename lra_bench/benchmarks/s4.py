"""S4 and S4D training-step speed and peak memory on CPU, beside the official S4 block timed in the same run.

    python -m lra_bench.benchmarks.s4 [--reference PATH/TO/s4.py] [--lengths 1024 4096 16384] [--batch 4] [--out ...]

Backbones with the Pathfinder preset's dims: 4 layers, H 256, N 64, bidirectional, one SSM per channel,
BatchNorm, pre-norm. Each cell runs forward + backward in its own process (peak RSS is that cell's) with
warm-up and the median of the repeats.

The reference is a local copy of the official standalone block, state-spaces/s4 ``models/s4/s4.py`` (it needs
einops, scipy and pytorch_lightning, all installed here; without its CUDA extension or pykeops it runs its naive
Cauchy / Vandermonde kernels). ``--reference PATH`` times ``ref_s4`` / ``ref_s4d`` (its ``S4Block`` in the same
residual BatchNorm stack, mode ``dplr`` / ``diag``) cell by cell beside ours, and the ratios compare the two
sides of this run. Without ``--reference`` no ratio is printed ("reference not run"): a ratio against a figure
measured on another day is not a measurement. Targets: S4 >= 4x the reference's tokens/s at <= 0.25x its memory,
S4D >= 1.5x; both within 8 GB at L = 16,384.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lra_bench.benchmarks.cells import run_cell, serve_cell, time_step
from lra_bench.benchmarks.process_memory import peak_rss_mb

H, N, LAYERS = 256, 64, 4
GOALS = {"s4": (4.0, 0.25), "s4d": (1.5, None)}  # speed >= x the reference, memory <= x the reference


def reference_stack(path: str, mode: str):
    """The official S4Block from the file at ``path``, in the residual pre-norm BatchNorm stack ours uses."""
    import importlib.util

    import torch
    from torch import nn

    spec = importlib.util.spec_from_file_location("official_s4", path)
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)

    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(official.S4Block(H, mode=mode, d_state=N, bidirectional=True, n_ssm=None,
                                                         transposed=True) for _ in range(LAYERS))
            self.norms = nn.ModuleList(nn.BatchNorm1d(H) for _ in range(LAYERS))

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            x = x.transpose(1, 2)
            for block, norm in zip(self.blocks, self.norms):
                x = x + block(norm(x))[0]
            return x.transpose(1, 2)

    return Stack()


def measure_cell(model: str, length: int, batch: int, warmup: int, repeats: int, reference: str | None = None) -> dict:
    import torch

    from lra_bench.models.ssm.s4 import S4Encoder

    torch.manual_seed(0)
    mode = "dplr" if model.endswith("s4") else "diag"
    if model.startswith("ref_"):
        net = reference_stack(reference, mode).train()
    else:
        net = S4Encoder(H, LAYERS, N, mode=mode, bidirectional=True, n_ssm=None, norm="batch", prenorm=True).train()
    x = torch.randn(batch, length, H)
    lengths = torch.full((batch,), length)

    def train_step() -> None:
        net(x, lengths).sum().backward()
        net.zero_grad(set_to_none=True)

    timing = time_step(train_step, warmup, repeats)
    return {**timing, "tokens_per_s": batch * length / timing["median_s"], "peak_rss_mb": peak_rss_mb()}


def targets(rows: list[dict]) -> list[tuple[str, float | None, str, str]]:
    """(claim, measured, goal, verdict) for every target; ratios only between cells of this run."""
    cell = {(r["model"], r["length"]): r for r in rows if "skipped" not in r}
    out = []
    lengths = sorted({r["length"] for r in rows})
    for model, (speed_goal, memory_goal) in GOALS.items():
        for length in lengths:
            ours, ref = cell.get((model, length)), cell.get((f"ref_{model}", length))
            if not any(r["model"] == f"ref_{model}" for r in rows):
                out.append((f"{model} vs the official block at {length}", None, f">= {speed_goal}x", "reference not run"))
                continue
            if ours is None or ref is None:
                out.append((f"{model} vs the official block at {length}", None, f">= {speed_goal}x", "a side was skipped"))
                continue
            speed = ours["tokens_per_s"] / ref["tokens_per_s"]
            out.append((f"{model} tokens/s at {length} vs the official block ({ref['tokens_per_s']:,.0f}, same run)", speed,
                        f">= {speed_goal}x", "yes" if speed >= speed_goal else "no"))
            if memory_goal:
                mem = ours["peak_rss_mb"] / ref["peak_rss_mb"]
                out.append((f"{model} peak RSS at {length} vs the official block ({ref['peak_rss_mb']:,.0f} MB, same run)", mem,
                            f"<= {memory_goal}x", "yes" if mem <= memory_goal else "no"))
        r = cell.get((model, 16384))
        if 16384 in lengths:
            out.append((f"{model} peak RSS at 16384 (MB)", r["peak_rss_mb"] if r else None, "<= 8192",
                        "yes" if r and r["peak_rss_mb"] <= 8192 else "no"))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_cell(argv, lambda spec: measure_cell(**spec)):
        return 0
    p = argparse.ArgumentParser(prog="python -m lra_bench.benchmarks.s4", description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--models", nargs="+", default=["s4", "s4d"], choices=["s4", "s4d"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench_results/s4")
    p.add_argument("--reference", default=None, metavar="PATH",
                   help="a local copy of state-spaces/s4 models/s4/s4.py, timed beside ours in this run")
    p.add_argument("--reference-max-length", type=int, default=4096,
                   help="longest L for the reference (its naive kernels materialise (H, N, L) tensors)")
    args = p.parse_args(argv)
    if args.reference and not Path(args.reference).is_file():
        print(f"error: --reference {args.reference}: no such file (a local copy of state-spaces/s4 models/s4/s4.py)",
              file=sys.stderr)
        return 2
    models = [*args.models, *([f"ref_{m}" for m in args.models] if args.reference else [])]
    rows = []
    for length in args.lengths:
        for model in models:
            if model.startswith("ref_") and length > args.reference_max_length:
                continue
            spec = {"model": model, "length": length, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats,
                    "reference": str(Path(args.reference).resolve()) if args.reference else None}
            row = {"model": model, "length": length, "batch": args.batch, **run_cell("lra_bench.benchmarks.s4", spec, args.timeout)}
            rows.append(row)
            shown = row.get("skipped") or f"{row['tokens_per_s']:,.0f} tokens/s, median {row['median_s']:.2f} s, peak {row['peak_rss_mb']:,.0f} MB"
            print(f"{model:>7} L={length:<6} {shown}", flush=True)
    checks = targets(rows)
    lines = ["| model | L | tokens/s | peak RSS (MB) |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['length']} | " + (f"skipped: {r['skipped']} | – |" if "skipped" in r else
              f"{r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |") for r in rows]
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {c} | {'–' if v is None else (f'{v:,.0f} MB' if c.endswith('(MB)') else f'{v:.2f}x')} | {g} | {m} |"
              for c, v, g, m in checks]
    table = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": {"cpus": os.cpu_count(), **vars(args)}, "rows": rows, "targets": checks}, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
