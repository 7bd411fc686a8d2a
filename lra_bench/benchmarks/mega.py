"""Mega vs the Hugging Face port: training-step speed and peak memory, side by side in one run.

    python -m lra_bench.benchmarks.mega [--lengths 1024 4096 16384] [--batch 2] [--repeats 5] [--out bench_results/mega]

Backbones with the Text preset's dims (4 layers, D 128, H = F 256, Z 64, N 16, scalenorm, post-norm,
softmax, dropout 0.1, EMA truncation 1024): ours (``mega`` full, ``mega_chunk`` C = 128) and the
port (transformers 4.46 ``MegaBlock`` x 4) configured two ways: ``hf_*`` with the same LRA settings
(identical math), and ``hf_*_default`` with the port's own default of no EMA truncation. Each cell
runs in a fresh subprocess (so peak RSS is that cell's), times forward + backward of a random batch
after warm-up, and reports the median. Prints a table of tokens/s and the ratios the Mega issue
targets; writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lra_bench.benchmarks.cells import run_cell, serve_cell, time_step
from lra_bench.benchmarks.process_memory import peak_rss_mb

D, H, Z, N, F_, LAYERS, CHUNK, TRUNCATION = 128, 256, 64, 16, 256, 4, 128, 1024
MODELS = ("mega_chunk", "mega", "hf_chunk", "hf_full", "hf_chunk_default", "hf_full_default")


def build(model: str, length: int):
    """Return (module, step_fn(x) -> output) for one backbone."""
    import torch

    max_positions = max(length, 4002)
    if model.startswith("mega"):
        from lra_bench.models.mega.mega import MegaEncoder

        chunk = CHUNK if model == "mega_chunk" else -1
        net = MegaEncoder(D, LAYERS, H, F_, Z, N, chunk, TRUNCATION, "softmax", "simple", max_positions, "scalenorm",
                          False, 0.1, 0.0, 0.0)
        return net, lambda x: net(x, torch.full((x.size(0),), x.size(1)))
    from transformers.models.deprecated.mega import MegaConfig
    from transformers.models.deprecated.mega.modeling_mega import MegaBlock

    chunked = "chunk" in model
    cfg = MegaConfig(
        hidden_size=D, intermediate_size=H, shared_representation_size=Z, ema_projection_size=N, nffn_hidden_size=F_,
        chunk_size=CHUNK if chunked else -1, use_chunking=chunked,
        truncation=None if model.endswith("default") else TRUNCATION, attention_activation="softmax",
        normalization_type="scalenorm", normalize_before_mega=False, normalize_before_ffn=False,
        relative_positional_bias="simple", max_positions=max_positions, dropout_prob=0.1,
        attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, nffn_activation_dropout_prob=0.0, bidirectional=True,
    )
    blocks = torch.nn.ModuleList(MegaBlock(cfg) for _ in range(LAYERS))

    def step(x):
        h = x.transpose(0, 1)
        mask = torch.ones(x.shape[:2], dtype=torch.long)
        for block in blocks:
            h = block(h, attention_mask=mask)[0]
        return h

    return blocks, step


def measure_cell(model: str, length: int, batch: int, warmup: int, repeats: int) -> dict:
    """Runs inside the child process."""
    import torch

    torch.manual_seed(0)
    net, step = build(model, length)
    net.train()
    x = torch.randn(batch, length, D)

    def train_step() -> None:
        step(x).sum().backward()
        net.zero_grad(set_to_none=True)

    timing = time_step(train_step, warmup, repeats)
    return {"model": model, "length": length, "batch": batch, **timing, "tokens_per_s": batch * length / timing["median_s"],
            "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads()}


def ratios(rows: list[dict]) -> list[tuple[str, float | None, float]]:
    """(claim, measured ratio, target) for the Mega issue's speed targets."""
    tps = {(r["model"], r["length"]): r.get("tokens_per_s") for r in rows}

    def ratio(a: tuple, b: tuple) -> float | None:
        return tps[a] / tps[b] if tps.get(a) and tps.get(b) else None

    out = []
    for ref in ("hf_chunk", "hf_chunk_default"):
        out.append((f"mega_chunk / {ref} tokens/s at 4096", ratio(("mega_chunk", 4096), (ref, 4096)), 3.0))
    for ref in ("hf_full", "hf_full_default"):
        out.append((f"mega / {ref} tokens/s at 4096", ratio(("mega", 4096), (ref, 4096)), 2.0))
    out.append(("mega_chunk tokens/s at 16384 / at 1024", ratio(("mega_chunk", 16384), ("mega_chunk", 1024)), 0.8))
    return out


def markdown(rows: list[dict], checks: list[tuple]) -> str:
    lengths = sorted({r["length"] for r in rows})
    lines = ["| model | " + " | ".join(f"L={n} tokens/s (peak MB)" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for model in MODELS:
        cells = []
        for n in lengths:
            r = next((r for r in rows if r["model"] == model and r["length"] == n), None)
            if r is None:
                cells.append("–")
            elif "skipped" in r:
                cells.append(f"skipped ({r['skipped']})")
            else:
                cells.append(f"{r['tokens_per_s']:,.0f} ({r['peak_rss_mb']:,.0f})")
        if any(c != "–" for c in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for claim, value, goal in checks:
        shown = f"{value:.2f}x" if value is not None else "n/a"
        lines.append(f"| {claim} | {shown} | >= {goal}x | {'yes' if value and value >= goal else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_cell(argv, lambda spec: measure_cell(**spec)):
        return 0
    p = argparse.ArgumentParser(prog="python -m lra_bench.benchmarks.mega", description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--full-max-length", type=int, default=4096, help="skip full attention above this length")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per cell before it is skipped")
    p.add_argument("--out", default="bench_results/mega")
    args = p.parse_args(argv)
    rows = []
    for length in args.lengths:
        for model in args.models:
            if "full" in model or model == "mega":
                if length > args.full_max_length:
                    continue
            spec = {"model": model, "length": length, "batch": args.batch, "warmup": args.warmup, "repeats": args.repeats}
            row = {"model": model, "length": length, "batch": args.batch, **run_cell("lra_bench.benchmarks.mega", spec, args.timeout)}
            rows.append(row)
            shown = row.get("skipped") or f"{row['tokens_per_s']:,.0f} tokens/s, median {row['median_s']:.3f} s, peak {row['peak_rss_mb']:,.0f} MB"
            print(f"{model:>17} L={length:<6} {shown}", flush=True)
    checks = ratios(rows)
    table = markdown(rows, checks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows, "targets": checks}, indent=2))
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
