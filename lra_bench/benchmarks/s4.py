"""S4 and S4D training-step speed and peak memory on CPU, against the public S4 block's measured figures.

    python -m lra_bench.benchmarks.s4 [--lengths 1024 4096 16384] [--batch 4] [--repeats 3] [--out bench_results/s4]

Backbones with the Pathfinder preset's dims: 4 layers, H 256, N 64, bidirectional, one SSM per channel,
BatchNorm, pre-norm. Each cell runs forward + backward in its own process (peak RSS is that cell's) with
warm-up and the median of the repeats. The reference is the state-spaces/s4 standalone block without
its CUDA extension or pykeops, as measured on this project's 2-core machines (issue 4): 534 / 480 tokens/s
(S4) and 2,621 / 2,152 (S4D) at L = 1,024 / 4,096, peak RSS 2.9 / 10.2 GB for S4. Targets: S4 >= 4x
the tokens/s at <= 0.25x the memory, S4D >= 1.5x, both within 8 GB at L = 16,384.
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
PUBLIC = {("s4", 1024): (534, 2900), ("s4", 4096): (480, 10200), ("s4d", 1024): (2621, None), ("s4d", 4096): (2152, None)}


def measure_cell(model: str, length: int, batch: int, warmup: int, repeats: int) -> dict:
    import torch

    from lra_bench.models.ssm.s4 import S4Encoder

    torch.manual_seed(0)
    net = S4Encoder(H, LAYERS, N, mode="dplr" if model == "s4" else "diag", bidirectional=True, n_ssm=None,
                    norm="batch", prenorm=True).train()
    x = torch.randn(batch, length, H)
    lengths = torch.full((batch,), length)

    def train_step() -> None:
        net(x, lengths).sum().backward()
        net.zero_grad(set_to_none=True)

    timing = time_step(train_step, warmup, repeats)
    return {**timing, "tokens_per_s": batch * length / timing["median_s"], "peak_rss_mb": peak_rss_mb()}


def targets(rows: list[dict]) -> list[tuple[str, float | None, str, bool]]:
    """(claim, measured, goal, met) for every target of the S4 issue."""
    cell = {(r["model"], r["length"]): r for r in rows if "skipped" not in r}
    out = []
    for (model, length), (tps, mem) in PUBLIC.items():
        r = cell.get((model, length))
        speed = r["tokens_per_s"] / tps if r else None
        goal = 4.0 if model == "s4" else 1.5
        out.append((f"{model} tokens/s at {length} vs public ({tps})", speed, f">= {goal}x", bool(speed and speed >= goal)))
        if mem:
            ratio = r["peak_rss_mb"] / mem if r else None
            out.append((f"{model} peak RSS at {length} vs public ({mem:,} MB)", ratio, "<= 0.25x", bool(ratio and ratio <= 0.25)))
    for model in ("s4", "s4d"):
        r = cell.get((model, 16384))
        out.append((f"{model} peak RSS at 16384 (MB)", r["peak_rss_mb"] if r else None, "<= 8192", bool(r and r["peak_rss_mb"] <= 8192)))
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
    args = p.parse_args(argv)
    rows = []
    for length in args.lengths:
        for model in args.models:
            spec = {"model": model, "length": length, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats}
            row = {"model": model, "length": length, "batch": args.batch, **run_cell("lra_bench.benchmarks.s4", spec, args.timeout)}
            rows.append(row)
            shown = row.get("skipped") or f"{row['tokens_per_s']:,.0f} tokens/s, median {row['median_s']:.2f} s, peak {row['peak_rss_mb']:,.0f} MB"
            print(f"{model:>4} L={length:<6} {shown}", flush=True)
    checks = targets(rows)
    lines = ["| model | L | tokens/s | peak RSS (MB) |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['length']} | " + (f"skipped: {r['skipped']} | – |" if "skipped" in r else
              f"{r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |") for r in rows]
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {c} | {'n/a' if v is None else (f'{v:,.0f} MB' if c.endswith('(MB)') else f'{v:.2f}x')} | {g} | {'yes' if m else 'no'} |"
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
