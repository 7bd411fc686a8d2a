"""Our S5 and Mamba beside their reference packages, and S5 / LRU beside our S4D, in one run (``make bench-ssm``).

    python -m lra_bench.benchmarks.ssm [--pairs s5 mamba] [--compare s4d s5 lru] [--groups backbone layer]
        [--lengths 1024 2048 4096] [--batch 2] [--layer-d-model 256] [--layer-state 64] [--out bench_results/ssm]

Pairs (the protocol: ``pairs.py``): ``s5`` is our bidirectional S5 SSM against ``s5-pytorch`` (P 192 in 12 blocks,
D 256: the Text preset's; the package keeps all P complex states, where ours keeps P/2 by conjugate symmetry), and
``mamba`` one pre-norm Mamba layer against ``mambapy``'s (D 128, the Text preset's, unidirectional as mambapy is),
weights matched, forward + backward, one process per cell.

The S4D comparison (issue 13, item 6: S5 and LRU, diagonal recurrences too, at least as fast as our S4D at 4K),
two ways, each model's backbone ``forward(x, lengths)`` on x (B, L, D):
- ``backbone``: the whole backbone at its Text preset's sizes (``experiment=lra/<model>-text``: S4D 6 layers, H 256,
  N 64; S5 6 layers, H 256, P 192; LRU 6 layers, H 256, N 192): what a Text run costs;
- ``layer``: one layer each at equal width and state size (``--layer-d-model`` H, ``--layer-state`` N set as each
  model's own state size: S4D's d_state, S5's P with the preset's block size P/J = 16, LRU's N): the recurrences
  compared at equal work.
Ratios divide cells of this run only. Writes results.json and results.md under ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lra_bench.benchmarks.pairs import (
    Cell,
    add_arguments,
    cell_text,
    compare,
    fmt_ratio,
    header,
    measure,
    measure_pair_cell,
    new_meta,
    pair_cells,
    pair_ratios,
    pair_table,
    pair_targets,
    preset_dims,
    reference_module,
    run_cells,
    target,
    target_table,
    write_results,
)

PAIRS = ("s5", "mamba")
COMPARED = ("s4d", "s5", "lru")
BASELINE = "s4d"
GROUPS = ("backbone", "layer")
S5_BLOCK = 16  # the S5 Text preset's HiPPO-N block size P / J = 192 / 12, kept for the layer comparison


def model_overrides(model: str, group: str, d_model: int, state: int, extra: list[str]) -> list[str]:
    """The Hydra overrides of ``model``'s backbone in ``group``: its Text preset, or one layer at (H, N)."""
    preset = [f"experiment=lra/{model}-text"]
    if group == "backbone":
        return [*preset, *extra]
    layer = [f"model.d_model={d_model}", "model.net.backbone.n_layers=1", f"model.net.backbone.d_state={state}"]
    if model == "s5":
        layer.append(f"model.net.backbone.blocks={max(state // S5_BLOCK, 1)}")
    return [*preset, *layer, *extra]


def measure_model_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: one of our backbones (``forward(x, lengths)``) built from ``spec['overrides']``, measured."""
    import torch
    from hydra.utils import instantiate

    from lra_bench.benchmarks.model_configs import compose_train

    torch.manual_seed(spec["seed"])
    cfg = compose_train(spec["overrides"])
    net = instantiate(cfg.model.net.backbone)
    B, L, D = spec["batch"], spec["length"], int(cfg.model.d_model)
    lengths = torch.full((B,), L, device=spec["device"])
    row = measure(net, lambda x: net(x, lengths), (B, L, D), spec["device"], spec["warmup"], spec["repeats"])
    backbone = cfg.model.net.backbone
    return row | {"d_model": D, "n_layers": int(backbone.n_layers), "d_state": int(backbone.d_state)}


def measure_cell(spec: dict[str, Any]) -> dict[str, Any]:
    return measure_pair_cell(spec) if spec["kind"] == "pair" else measure_model_cell(spec)


def model_cells(models: list[str], groups: list[str], lengths: list[int], args: argparse.Namespace) -> list[Cell]:
    cells = []
    for length in sorted(lengths):
        for group in groups:
            for model in models:
                overrides = model_overrides(model, group, args.layer_d_model, args.layer_state, list(args.model_overrides))
                spec = {"kind": group, "name": model, "side": "ours", "length": length, "batch": args.batch,
                        "overrides": overrides, "warmup": args.warmup, "repeats": args.repeats, "device": args.device,
                        "seed": 0}
                cells.append(Cell(group, model, "ours", length, spec))
    return cells


def interleave(first: list[Cell], second: list[Cell]) -> list[Cell]:
    """Both lists' cells by increasing length, so every length's cells run close together in time."""
    return sorted(first + second, key=lambda c: c.length)  # stable: each list keeps its order within a length


def baseline_ratios(rows: list[dict[str, Any]], run: str, groups: list[str], models: list[str]) -> list[dict[str, Any]]:
    """Each compared model over our S4D in the same group and length, from this run's cells."""
    out = []
    lengths = sorted({r["length"] for r in rows if r["kind"] in groups})
    for group in groups:
        for model in models:
            for length in lengths:
                out.append({"group": group, "name": model, **compare(rows, run, (group, model, "ours"),
                                                                       (group, BASELINE, "ours"), length, absent="S4D not run")})
    return out


def model_table(rows: list[dict[str, Any]], ratios: list[dict[str, Any]], run: str) -> list[str]:
    mine = {(r["kind"], r["name"], r["length"]): r for r in rows if r.get("run") == run}
    out = ["| group | model (layers x H, N) | L | tokens/s | step MB | speed x vs S4D | memory x vs S4D |",
           "|---|---|---|---|---|---|---|"]
    for r in ratios:
        row = mine.get((r["group"], r["name"], r["length"]))
        size = f" ({row['n_layers']} x {row['d_model']}, {row['d_state']})" if row and "n_layers" in row else ""
        memory = f"{r['memory']:.2f}x" if r["memory"] is not None else "–"
        out.append(f"| {r['group']} | {r['name']}{size} | {r['length']} | {cell_text(row, 'tokens_per_s')} | "
                   f"{cell_text(row, 'memory_mb')} | {fmt_ratio(r['speed'], r['note'])} | {memory} |")
    return out


def main(argv: list[str] | None = None) -> int:
    from lra_bench.benchmarks.cells import serve_cell

    argv = sys.argv[1:] if argv is None else argv
    if serve_cell(argv, measure_cell):
        return 0
    p = argparse.ArgumentParser(prog="python -m lra_bench.benchmarks.ssm", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=PAIRS)
    p.add_argument("--compare", nargs="*", default=list(COMPARED), choices=COMPARED)
    p.add_argument("--groups", nargs="*", default=list(GROUPS), choices=GROUPS)
    p.add_argument("--layer-d-model", type=int, default=256, help="H of the one-layer comparison")
    p.add_argument("--layer-state", type=int, default=64, help="N of the one-layer comparison (each model's own)")
    p.add_argument("--model-overrides", nargs="*", default=[], help="Hydra overrides for the compared models' configs")
    add_arguments(p, "bench_results/ssm")
    args = p.parse_args(argv)
    meta = new_meta(args)
    references = {name: reference_module(name).REFERENCE for name in args.pairs}
    dims = {name: (args.d_model or preset_dims(name)[0], 1) for name in args.pairs}
    meta |= {"dims": dims, "layer": {"d_model": args.layer_d_model, "state": args.layer_state},
             "model_overrides": list(args.model_overrides)}
    cells = interleave(pair_cells(dims, args.lengths, batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                                  device=args.device),
                       model_cells(list(args.compare), list(args.groups), args.lengths, args))
    rows = run_cells("lra_bench.benchmarks.ssm", cells, run=meta["run"], timeout=args.timeout,
                     cell_seconds=args.cell_seconds)
    ratios = pair_ratios(rows, meta["run"])
    compared = [m for m in args.compare if m != BASELINE]
    versus = baseline_ratios(rows, meta["run"], list(args.groups), list(args.compare))
    by = {(r["group"], r["name"], r["length"]): r for r in versus}
    targets = pair_targets(ratios, args.pairs, references, args.target_length)
    targets += [target(f"{m} {g} tokens/s vs our S4D {g} at {args.target_length}", by.get((g, m, args.target_length)), 1.0)
                for g in args.groups for m in compared if m in ("s5", "lru")]
    meta["wall_s"] = time.time() - meta["started"]
    lines = [header(meta), ""]
    if args.pairs:
        lines += ["Ours vs the reference package (s5: the bidirectional S5 SSM; mamba: one Mamba layer), D: " +
                  ", ".join(f"{n} {d}" for n, (d, _) in dims.items()) + ":", "",
                  *pair_table(rows, ratios, meta["run"], references), ""]
    if args.compare:
        lines += [f"Our S5 and LRU vs our S4D (backbone: the Text presets; layer: one layer, H {args.layer_d_model}, "
                  f"N {args.layer_state}):", "", *model_table(rows, versus, meta["run"]), ""]
    lines += target_table(targets)
    markdown = "\n".join(lines) + "\n"
    files = write_results(Path(args.out), meta, rows, {"ratios": ratios, "versus_s4d": versus, "targets": targets,
                                                       "references": references}, markdown)
    print(markdown)
    print(f"wrote {files['json']} and {files['md']} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
