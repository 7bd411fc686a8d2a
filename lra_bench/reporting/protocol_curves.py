"""Scratch vs self-pretrained runs of one sweep: validation accuracy against the total optimizer steps of both
stages, mean and range over seeds, and the table of final figures with the SPT - scratch difference per model.

``python -m lra_bench.reporting.protocol_curves logs/multiruns/<sweep> [--out curves.png] [--table table.md]``

A self-pretrained run's curve starts where its stage 1 ended (``pretrain/steps``), so both protocols share one
x axis: at equal budgets (``pretrain=spt_half``) the two curves end at the same step. The difference is called
only when the two protocols' seed ranges do not overlap (with 3 seeds, anything else is within the noise).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def read_runs(sweep: Path) -> list[dict[str, Any]]:
    """Each finished job's result.json (stage 2's: a stage-1 result is part of its run) with its validation curve."""
    runs = []
    for path in sorted(sweep.rglob("result.json")):
        result = json.loads(path.read_text())
        if result.get("stage") == "pretrain":
            continue
        offset = int(result.get("pretrain/steps") or 0)
        curve = []
        metrics = path.parent / "csv" / "metrics.csv"
        if metrics.is_file():
            with metrics.open() as f:
                for row in csv.DictReader(f):
                    if row.get("val/acc"):
                        curve.append((offset + int(row["step"]), float(row["val/acc"])))
        runs.append({**result, "curve": curve, "variant": result.get("experiment") or result.get("task")})
    return runs


def group(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["variant"], r["model"], r.get("protocol") or "scratch")].append(r)
    return dict(sorted(groups.items()))


def summary(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * sd:.2f} [{100 * min(values):.2f}–{100 * max(values):.2f}]"


def table(groups: dict[tuple[str, str, str], list[dict[str, Any]]]) -> str:
    """Markdown: per task variant and model, each protocol's n, steps, best val and test accuracy (mean ± sd
    [min–max] over seeds), then the SPT - scratch difference of the test means and whether the ranges separate."""
    lines = ["| task | model | protocol | seeds | total steps | best val acc % | test acc % |", "|---|---|---|---|---|---|---|"]
    for (variant, model, protocol), runs in groups.items():
        steps = sorted({r.get("budget/total_steps") or r.get("global_step") for r in runs})
        lines.append(f"| {variant} | {model} | {protocol} | {len(runs)} | {', '.join(map(str, steps))} | "
                     f"{summary([r['val/acc_best'] for r in runs])} | {summary([r['test/acc'] for r in runs])} |")
    lines += ["", "| task | model | SPT − scratch, test acc (points) | ranges |", "|---|---|---|---|"]
    for variant, model in sorted({(v, m) for v, m, _ in groups}):
        spt, scratch = groups.get((variant, model, "spt"), []), groups.get((variant, model, "scratch"), [])
        if not spt or not scratch:
            continue
        a, b = [r["test/acc"] for r in spt], [r["test/acc"] for r in scratch]
        diff = 100 * (statistics.fmean(a) - statistics.fmean(b))
        apart = min(a) > max(b) or max(a) < min(b)
        lines.append(f"| {variant} | {model} | {diff:+.2f} | {'apart' if apart else 'overlap: within the seeds noise'} |")
    return "\n".join(lines) + "\n"


def plot(groups: dict[tuple[str, str, str], list[dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = sorted({v for v, _, _ in groups})
    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        for (v, model, protocol), runs in groups.items():
            if v != variant:
                continue
            steps = sorted({s for r in runs for s, _ in r["curve"]})
            by_step = [[acc for r in runs for s, acc in r["curve"] if s == step] for step in steps]
            keep = [(s, vals) for s, vals in zip(steps, by_step) if len(vals) == len(runs)]  # every seed validated there
            if not keep:
                continue
            xs = [s for s, _ in keep]
            line, = ax.plot(xs, [100 * statistics.fmean(v) for _, v in keep], label=f"{model} {protocol} (n={len(runs)})",
                            linestyle="-" if protocol == "spt" else "--")
            ax.fill_between(xs, [100 * min(v) for _, v in keep], [100 * max(v) for _, v in keep], alpha=0.15,
                            color=line.get_color())
        ax.set_title(f"{variant}: validation accuracy (mean, seed range)")
        ax.set_xlabel("optimizer steps, both stages")
        ax.set_ylabel("val accuracy %")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder (logs/multiruns/<sweep>) or any folder of runs")
    parser.add_argument("--out", type=Path, default=None, help="the curves' PNG (default: <sweep>/protocol_curves.png)")
    parser.add_argument("--table", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        raise SystemExit(f"error: {args.sweep} is not a folder; give a sweep folder such as logs/multiruns/<sweep>")
    groups = group(read_runs(args.sweep))
    if not groups:
        raise SystemExit(f"error: no finished run (result.json) under {args.sweep}")
    text = table(groups)
    print(text)
    if args.table:
        args.table.write_text(text)
    out = args.out or args.sweep / "protocol_curves.png"
    plot(groups, out)
    print(f"curves: {out}")


if __name__ == "__main__":
    main()
