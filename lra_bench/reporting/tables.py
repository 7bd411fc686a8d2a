"""The report's tables (markdown): the LRA table with seed statistics and flags, the efficiency table, the runs.

A cell is one (model, scale, task): the test accuracies (%) of its seeds, shown as mean ± std (n). A cell is
flagged when its seeds disagree (max - min > ``spread`` points), when some seeds are at chance and others are not,
and marked when every run in it is at chance (``runs.at_chance``: the run's chance diagnosis).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, NamedTuple

from lra_bench.reporting.published import FAIL, five_task_avg, rows_for
from lra_bench.reporting.runs import TASK_TITLES, TASKS, at_chance, number, scale_of

SPREAD = 5.0  # points of test accuracy between a cell's best and worst seed above which the cell is flagged


class Cell(NamedTuple):
    mean: float
    std: float  # sample standard deviation over seeds (0 for one run)
    n: int


def cell_flags(values: list[float], chance: list[bool], spread: float) -> list[str]:
    """What a reader should know about a cell: all runs at chance, some seeds at chance, seeds that disagree."""
    flags = []
    k, n = sum(chance), len(chance)
    if k and k == n:
        flags.append("at chance" if n == 1 else f"all {n} seeds at chance")
    elif k:
        flags.append(f"{k} of {n} seeds at chance")
    if n > 1 and max(values) - min(values) > spread:
        flags.append(f"seeds disagree: spread {max(values) - min(values):.1f} > {spread:g} points")
    return flags


def table_rows(runs: list[dict[str, Any]], spread: float = SPREAD) -> list[dict[str, Any]]:
    """One row per (model, scale): per task a ``Cell`` of test accuracy (%), ``flags`` per task, ``avg`` over the
    six tasks (None unless all six ran) and ``avg5`` over the five before Path-X."""
    cells: dict[tuple[str, str], dict[str, list[tuple[float, bool]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        acc = number(r, "test/acc")
        if acc is not None:
            model = r["model"] + (" [LRA code]" if r.get("lra_code") else "")  # run with lra_code=true
            cells[(model, scale_of(r))][r["task"]].append((100 * acc, at_chance(r)))
    rows = []
    for (model, scale), by_task in sorted(cells.items()):
        row: dict[str, Any] = {"model": model, "scale": scale, "flags": {}}
        for t in TASKS:
            if by_task.get(t):
                values, chance = [v for v, _ in by_task[t]], [c for _, c in by_task[t]]
                row[t] = Cell(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
                row["flags"][t] = cell_flags(values, chance, spread)
        means = [row[t].mean for t in TASKS if t in row]
        row["avg"] = statistics.mean(means) if len(means) == len(TASKS) else None
        row["avg5"] = five_task_avg(tuple(row[t].mean if t in row else None for t in TASKS))
        rows.append(row)
    return rows


def fmt_cell(cell: Cell | None, flags: list[str] | None = None) -> str:
    if cell is None:
        return "–"
    mean, std, n = cell
    text = f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f}"
    return text + "".join(f" ⚠ {f}" for f in flags or ())


def lra_table(rows: list[dict[str, Any]]) -> str:
    """Our rows (six-task Avg, and the five-task Avg the LRA papers use) above the published rows of the same
    models, each with its Avg exactly as its paper prints it and its source."""
    head = "| model | runs | " + " | ".join(TASK_TITLES[t] for t in TASKS) + " | Avg (6) | Avg (5, no Path-X) | source |"
    lines = [head, "|---|---|" + "---|" * (len(TASKS) + 3)]
    for r in rows:
        avg = f"{r['avg']:.2f}" if r["avg"] is not None else "–"
        avg5 = f"{r['avg5']:.2f}" if r.get("avg5") is not None else "–"
        cells = " | ".join(fmt_cell(r.get(t), r.get("flags", {}).get(t)) for t in TASKS)
        lines.append(f"| **{r['model']}** | {r['scale']} | {cells} | {avg} | {avg5} | ours |")
    for p in rows_for({r["model"] for r in rows} | {"mega", "mega_chunk", "transformer", "s4"}):
        shown = ["✗" if v is FAIL else f"{v:.2f}" for v in p.scores]
        six, five = (f"{p.avg:.2f}", "–") if p.scores[-1] is not FAIL else ("–", f"{p.avg:.2f}")
        source = f"{p.source} ({p.note})" if p.note else p.source
        lines.append(f"| {p.name} | published | " + " | ".join(shown) + f" | {six} | {five} | {source} |")
    return "\n".join(lines)


def flags_legend(spread: float) -> str:
    return (f"⚠ marks a cell to read with care: **at chance** (the run's chance diagnosis: its best validation accuracy "
            f"stayed within noise of the validation split's majority-class rate), **k of n seeds at chance** (some seeds "
            f"learned, others did not), **seeds disagree** (best and worst seed more than {spread:g} points apart; "
            f"`--spread` sets it). Usual fixes for runs at chance: a lower learning rate, a longer warmup, another seed.")


def efficiency_table(bench: dict[str, Any]) -> str:
    rows = [r for r in bench["rows"] if "skipped" not in r]
    lengths = sorted({r["length"] for r in rows})
    length = 4096 if 4096 in lengths else (max(lengths) if lengths else None)
    meta = bench["meta"]
    lines = [f"From `{bench['path']}` ({meta['device']}, {meta['precision']}, preset `{meta['task']}`), L = {length}:", "",
             "| model | tokens/s | speed x (SDPA Transformer) | memory MB | memory x (SDPA Transformer) |", "|---|---|---|---|---|"]
    for r in rows:
        if r["length"] == length:
            sx = f"{r['speed_vs_transformer']:.2f}x" if "speed_vs_transformer" in r else "–"
            mx = f"{r['memory_vs_transformer']:.2f}x" if "memory_vs_transformer" in r else "–"
            lines.append(f"| {r['model']} | {r['tokens_per_s']:,.0f} | {sx} | {r['memory_mb']:,.0f} | {mx} |")
    return "\n".join(lines)


def diagnosis_of(run: dict[str, Any]) -> str:
    if run.get("diagnosis") == "at_chance":
        return "⚠ at chance" + (" (stopped early)" if run.get("diagnosis/stopped_early") else "")
    if run.get("diagnosis") in ("learning", "not_checked"):
        return run["diagnosis"].replace("_", " ")
    return "⚠ at chance (val acc at the majority rate)" if at_chance(run) else "–"


def runs_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| model | task | seed | scale | val acc | test acc | tokens/s | diagnosis | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["model"], str(r.get("seed")))):
        val, test, tps = number(r, "val/acc_best"), number(r, "test/acc"), number(r, "perf/tokens_per_sec")
        shown = [f"{100 * val:.2f}" if val is not None else "–", f"{100 * test:.2f}" if test is not None else "–",
                 f"{tps:,.0f}" if tps is not None else "–"]
        lines.append(f"| {r['model']} | {r['task']} | {r.get('seed')} | {scale_of(r)} | " + " | ".join(shown)
                     + f" | {diagnosis_of(r)} | {r['source']} |")
    return "\n".join(lines)
