"""Our attention mechanisms beside their PyTorch reference packages, side by side in one run (``make bench-attention``).

    python -m lra_bench.benchmarks.attention [--pairs local linformer ...] [--lengths 1024 2048 4096] [--batch 2]
        [--warmup 2] [--repeats 5] [--target-length 4096] [--out bench_results/attention]

One attention layer each side (q/k/v/out projections and the mechanism), built by the pairing module
``lra_bench/benchmarks/references/<name>.py`` with the Text preset's dims (``experiment=lra/<name>-text``:
D 256, 4 heads) and LRA's settings for the mechanism, weights matched; forward + backward, one process per cell,
medians after warm-up (the protocol: ``pairs.py``). The references: ``local-attention`` (local), Hugging Face
``transformers`` (Longformer sliding window + global CLS, Reformer LSH, BigBird block-sparse), ``linformer``,
``performer-pytorch`` (LRA's default relu kernel) and ``sinkhorn-transformer`` (configured as near LRA as it goes;
its math differs in places, see its pairing module, so the two compute similar, not equal, functions).

Target (issue 12, item 5): each of ours at 4K no slower than its reference (tokens/s ratio >= 1), from the two
cells of this run. Writes results.json and results.md under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lra_bench.benchmarks.cells import serve_cell
from lra_bench.benchmarks.pairs import (
    add_arguments,
    header,
    measure_pair_cell,
    new_meta,
    pair_cells,
    pair_ratios,
    pair_table,
    pair_targets,
    preset_dims,
    reference_module,
    run_cells,
    target_table,
    write_results,
)

PAIRS = ("local", "longformer", "linformer", "performer", "reformer", "sinkhorn", "bigbird")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_cell(argv, measure_pair_cell):
        return 0
    p = argparse.ArgumentParser(prog="python -m lra_bench.benchmarks.attention", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    add_arguments(p, "bench_results/attention")
    args = p.parse_args(argv)
    meta = new_meta(args)
    references = {name: reference_module(name).REFERENCE for name in args.pairs}
    dims = {}
    for name in args.pairs:
        d_model, n_heads = preset_dims(name)
        dims[name] = (args.d_model or d_model, args.n_heads or n_heads)
    meta["dims"] = dims
    cells = pair_cells(dims, args.lengths, batch=args.batch, warmup=args.warmup, repeats=args.repeats, device=args.device)
    rows = run_cells("lra_bench.benchmarks.attention", cells, run=meta["run"], timeout=args.timeout,
                     cell_seconds=args.cell_seconds)
    ratios = pair_ratios(rows, meta["run"])
    targets = pair_targets(ratios, args.pairs, references, args.target_length)
    meta["wall_s"] = time.time() - meta["started"]
    lines = [header(meta), "", "Attention layers (D, H per mechanism: " +
             ", ".join(f"{n} {d}/{h}" for n, (d, h) in dims.items()) + "):", "",
             *pair_table(rows, ratios, meta["run"], references), "", *target_table(targets)]
    markdown = "\n".join(lines) + "\n"
    files = write_results(Path(args.out), meta, rows, {"ratios": ratios, "targets": targets, "references": references},
                          markdown)
    print(markdown)
    print(f"wrote {files['json']} and {files['md']} in {meta['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
