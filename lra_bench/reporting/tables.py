"""The report's tables (markdown): the LRA table with seed statistics and flags, the table of runs on other data,
the efficiency table, the runs.

A cell holds the seeds of one configuration (``configurations``: same model, task and data, experiment and resolved
settings apart from the seed): the test accuracies (%) of its runs, shown as mean ± std (n) and the number of
configurations it holds (one, by construction; counted, not assumed). Runs that differ otherwise are other rows,
named by what differs from the reference configuration of their model and task. Runs self-pretrained first
(``pretrain=spt``) are another protocol: their own rows, marked [SPT], never pooled with runs from scratch. Runs on
another data set of a task (the quick short ListOps) are never in an LRA column: they have their own table. A cell
is flagged when its seeds disagree (max - min > ``spread`` points), when some seeds are at chance and others are
not, when two runs share a seed, and marked when every run in it is at chance (``runs.at_chance``: the run's chance
diagnosis).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from typing import Any, NamedTuple

from lra_bench.reporting.configurations import (LRA_CODE, PROTOCOL, differences, identity, label, reference_group,
                                                reference_identities, settings, spt_recipe, task_variant, uses_lra_code)
from lra_bench.reporting.published import FAIL, five_task_avg, rows_for
from lra_bench.reporting.runs import TASK_TITLES, TASKS, at_chance, number, scale_of

SPREAD = 5.0  # points of test accuracy between a cell's best and worst seed above which the cell is flagged
LRA_CODE_MARK = "[LRA code]"
SPT_MARK = "[SPT]"  # self-pretrained on the task's training inputs first (pretrain=spt); [SPT: <recipe>] for another recipe


class Cell(NamedTuple):
    mean: float
    std: float  # sample standard deviation over seeds (0 for one run)
    n: int


def cell_flags(values: list[float], chance: list[bool], spread: float, seeds: list[Any] | None = None) -> list[str]:
    """What a reader should know about a cell: all runs at chance, some seeds at chance, seeds that disagree (best
    and worst more than ``spread`` points apart, at the cell's two decimals), runs that share a seed."""
    flags = []
    k, n = sum(chance), len(chance)
    if k and k == n:
        flags.append("at chance" if n == 1 else f"all {n} seeds at chance")
    elif k:
        flags.append(f"{k} of {n} seeds at chance")
    gap = round(max(values) - min(values), 2)
    if n > 1 and gap > spread:
        flags.append(f"seeds disagree: spread {gap:.2f} > {spread:g} points")
    distinct = len({json.dumps(s, default=str) for s in seeds}) if seeds is not None else n
    if distinct < n:
        flags.append(f"{n - distinct} run(s) repeat a seed")
    return flags


def _cell(runs: list[dict[str, Any]], spread: float) -> tuple[Cell, list[str], int]:
    """A cell of these runs, its flags and the number of configurations among them."""
    values = [100 * number(r, "test/acc") for r in runs]
    cell = Cell(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
    flags = cell_flags(values, [at_chance(r) for r in runs], spread, [r.get("seed") for r in runs])
    return cell, flags, len({identity(r) for r in runs})


def _row_key(run: dict[str, Any], references: dict) -> tuple[tuple, list[tuple[str, Any, Any]]]:
    """(what puts a run in a row, its differences from its reference): model, the SPT recipe ('' from scratch),
    scale, the LRA-code switch and the exact differing settings (values, not their shortened text)."""
    reference = json.loads(references[reference_group(run)])
    diffs = differences(settings(run), reference)
    exact = tuple((k, json.dumps(v, default=str)) for k, v, _ in diffs if k not in (LRA_CODE, PROTOCOL))
    return (run["model"], spt_recipe(run) or "", scale_of(run), uses_lra_code(run), exact), diffs


def table_rows(runs: list[dict[str, Any]], spread: float = SPREAD) -> list[dict[str, Any]]:
    """The LRA table: runs on the LRA tasks' own data, one row per (model, protocol, scale, LRA code, settings that
    differ from the reference); per task a ``Cell`` of test accuracy (%), ``flags``, ``configs`` (configurations in the
    cell) and ``runs``; ``avg`` over the six tasks (None unless all six ran), ``avg5`` over the five before Path-X;
    ``label`` (what differs, short), ``spt`` (the SPT recipe, None from scratch) and ``differences`` per task (key,
    value, the reference's value)."""
    scored = [r for r in runs if number(r, "test/acc") is not None]
    references = reference_identities(scored, scale_of)
    grouped: dict[tuple, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    diffs_of: dict[tuple, dict[str, list]] = defaultdict(dict)
    for r in scored:
        if task_variant(r) is None and r["task"] in TASKS:
            key, diffs = _row_key(r, references)
            grouped[key][r["task"]].append(r)
            diffs_of[key][r["task"]] = diffs
    rows = []
    for key, by_task in sorted(grouped.items(), key=lambda kv: (kv[0][:4], len(kv[0][4]), kv[0][4])):
        model, recipe, scale, lra_code, _ = key
        first = next(iter(diffs_of[key].values()))
        row: dict[str, Any] = {"model": model, "scale": scale, "lra_code": lra_code, "spt": recipe or None,
                               "label": label(first), "differences": diffs_of[key], "flags": {}, "configs": {},
                               "runs": dict(by_task)}
        for t in TASKS:
            if by_task.get(t):
                row[t], row["flags"][t], row["configs"][t] = _cell(by_task[t], spread)
        means = [row[t].mean for t in TASKS if t in row]
        row["avg"] = statistics.mean(means) if len(means) == len(TASKS) else None
        row["avg5"] = five_task_avg(tuple(row[t].mean if t in row else None for t in TASKS))
        rows.append(row)
    return rows


def variant_rows(runs: list[dict[str, Any]], spread: float = SPREAD) -> list[dict[str, Any]]:
    """Runs on another data set of a task (``task_variant``): one row per configuration, with its cell."""
    scored = [r for r in runs if number(r, "test/acc") is not None]
    references = reference_identities(scored, scale_of)
    grouped: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    diffs_of: dict[tuple, list] = {}
    for r in scored:
        variant = task_variant(r)
        if variant is not None or r["task"] not in TASKS:
            key, diffs = _row_key(r, references)
            grouped[(r["task"], variant or "", *key)].append(r)
            diffs_of[(r["task"], variant or "", *key)] = diffs
    rows = []
    for key, members in sorted(grouped.items(), key=lambda kv: kv[0][:6]):
        task, variant, model, recipe, scale, lra_code, _ = key
        cell, flags, configs = _cell(members, spread)
        rows.append({"model": model, "task": task, "variant": variant, "scale": scale, "lra_code": lra_code,
                     "spt": recipe or None,
                     "label": label(diffs_of[key]), "cell": cell, "flags": flags, "configs": configs, "runs": {task: members}})
    return rows


def spt_mark(recipe: str | None) -> str:
    """``[SPT]`` for the paper's recipe (``pretrain=spt``), ``[SPT: spt_s4]`` for another, '' from scratch."""
    return "" if not recipe else SPT_MARK if recipe == "spt" else f"[SPT: {recipe}]"


def row_name(row: dict[str, Any], bold: bool = True) -> str:
    """``**mega** (lr=0.0005) [LRA code]``, ``**transformer** [SPT]``: the model, what differs from its reference,
    the LRA-code and protocol markers."""
    name = f"**{row['model']}**" if bold else row["model"]
    marks = [m for m in (LRA_CODE_MARK if row["lra_code"] else "", spt_mark(row.get("spt"))) if m]
    return name + (f" ({row['label']})" if row["label"] else "") + "".join(f" {m}" for m in marks)


def fmt_cell(cell: Cell | None, flags: list[str] | None = None, configs: int = 1) -> str:
    if cell is None:
        return "–"
    mean, std, n = cell
    text = f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f} (n=1)"
    text += f" · {configs} config{'s' if configs != 1 else ''}"
    return text + "".join(f" ⚠ {f}" for f in flags or ())


def lra_table(rows: list[dict[str, Any]]) -> str:
    """Our rows (six-task Avg, and the five-task Avg the LRA papers use) above the published rows of the same
    models, each with its Avg exactly as its paper prints it and its source."""
    head = "| model | runs | " + " | ".join(TASK_TITLES[t] for t in TASKS) + " | Avg (6) | Avg (5, no Path-X) | source |"
    lines = [head, "|---|---|" + "---|" * (len(TASKS) + 3)]
    for r in rows:
        avg = f"{r['avg']:.2f}" if r["avg"] is not None else "–"
        avg5 = f"{r['avg5']:.2f}" if r.get("avg5") is not None else "–"
        cells = " | ".join(fmt_cell(r.get(t), r.get("flags", {}).get(t), r.get("configs", {}).get(t, 1)) for t in TASKS)
        lines.append(f"| {row_name(r)} | {r['scale']} | {cells} | {avg} | {avg5} | ours |")
    for p in rows_for({r["model"] for r in rows} | {"mega", "mega_chunk", "transformer", "s4"}):
        shown = ["✗" if v is FAIL else f"{v:.2f}" for v in p.scores]
        six, five = (f"{p.avg:.2f}", "–") if p.scores[-1] is not FAIL else ("–", f"{p.avg:.2f}")
        source = f"{p.source} ({p.note})" if p.note else p.source
        lines.append(f"| {p.name} | published | " + " | ".join(shown) + f" | {six} | {five} | {source} |")
    return "\n".join(lines)


def variant_table(rows: list[dict[str, Any]]) -> str:
    """Runs on other data sets of a task, one configuration a row: never LRA numbers, never beside published ones."""
    lines = ["| model | task | data (differs from the LRA task) | runs | test acc (%) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {row_name(r)} | {TASK_TITLES.get(r['task'], r['task'])} | {r['variant'] or 'not an LRA task'} | "
                     f"{r['scale']} | {fmt_cell(r['cell'], r['flags'], r['configs'])} |")
    return "\n".join(lines)


def configurations_list(rows: list[dict[str, Any]]) -> str:
    """For each named row, every setting in which it differs from its reference, per task."""
    lines = []
    for r in rows:
        for task, diffs in (r.get("differences") or {}).items():
            shown = [f"`{k}` = {v!r} (reference {ref!r})" for k, v, ref in diffs if k not in (LRA_CODE, PROTOCOL)]
            if shown:
                lines.append(f"- {row_name(r)}, {TASK_TITLES.get(task, task)}: " + "; ".join(shown))
    return "\n".join(lines)


def flags_legend(spread: float) -> str:
    return (f"⚠ marks a cell to read with care: **at chance** (the run's chance diagnosis: its best validation accuracy "
            f"stayed within noise of the validation split's majority-class rate), **k of n seeds at chance** (some seeds "
            f"learned, others did not), **seeds disagree** (best and worst seed more than {spread:g} points apart; "
            f"`--spread` sets it), **run(s) repeat a seed** (two runs of one configuration with the same seed: a copy?). "
            f"Usual fixes for runs at chance: a lower learning rate, a longer warmup, another seed. Each cell holds one "
            f"configuration (\"· 1 config\"); a row named `model (key=value, …)` differs from that model's reference "
            f"configuration (its paper preset, else its most-run one) in those settings; {LRA_CODE_MARK} marks runs made "
            f"with LRA's released code (`{LRA_CODE}=true`: its defects included, to reproduce LRA Table 1); {SPT_MARK} "
            f"marks runs self-pretrained on the task's own training inputs before the preset's training (`pretrain=spt`, "
            f"Amos et al., ICLR 2024; `[SPT: <recipe>]` for another recipe): another protocol, never pooled with runs "
            f"from scratch, and named against the SPT runs of its preset (published SPT rows say so in their name).")


def efficiency_table(bench: dict[str, Any]) -> str:
    rows = [r for r in bench["rows"] if "skipped" not in r]
    lengths = sorted({r["length"] for r in rows})
    length = 4096 if 4096 in lengths else (max(lengths) if lengths else None)
    meta = bench["meta"]
    lines = [f"From `{bench['path']}` ({meta['device']}, {meta['precision']}, batch {meta['batch']}, preset `{meta['task']}`), L = {length}:", "",
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


def _count(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def protocol_of(run: dict[str, Any]) -> str:
    """``scratch``, or ``SPT (spt, masked)``: the recipe and its stage-1 objective."""
    recipe = spt_recipe(run)
    if recipe is None:
        return "scratch"
    objective = run.get("pretrain/objective")
    return f"SPT ({recipe}{', ' + objective if isinstance(objective, str) else ''})"


def budget_of(run: dict[str, Any]) -> str:
    """Optimizer steps and training tokens of the whole run: ``2 + 20 = 22 steps · 1,536 + 15,360 = 16,896 tokens``
    for an SPT run (stage 1 + stage 2 = both, from its ``pretrain/*`` and ``budget/*`` keys), ``20 steps · 15,360
    tokens`` for a run from scratch; '–' where result.json says nothing (files older than the count)."""
    steps, tokens = number(run, "global_step"), number(run, "train/tokens_seen")
    spt = spt_recipe(run) is not None
    if spt and number(run, "budget/total_steps") is not None:
        return (f"{_count(number(run, 'pretrain/steps'))} + {_count(steps)} = {_count(number(run, 'budget/total_steps'))} "
                f"steps · {_count(number(run, 'pretrain/tokens_seen'))} + {_count(tokens)} = "
                f"{_count(number(run, 'budget/total_tokens'))} tokens")
    if steps is None and tokens is None:
        return "–"
    return ("stage 2 only: " if spt else "") + f"{_count(steps)} steps · {_count(tokens)} tokens"


def runs_table(runs: list[dict[str, Any]], rows: list[dict[str, Any]] = ()) -> str:
    """Every run, with the row (configuration) it is counted in, its protocol and its budget (both stages' for an
    SPT run)."""
    placed = {id(run): (row_name(row, bold=False) + ("" if task_variant(run) is None else f", {row['variant']}"))
              for row in rows for members in row["runs"].values() for run in members}
    lines = ["| model | task | seed | scale | row | protocol | val acc | test acc | budget (SPT: stage 1 + stage 2 = both) "
             "| tokens/s | diagnosis | source |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["model"], spt_recipe(r) or "", str(r.get("seed")))):
        val, test, tps = number(r, "val/acc_best"), number(r, "test/acc"), number(r, "perf/tokens_per_sec")
        shown = [f"{100 * val:.2f}" if val is not None else "–", f"{100 * test:.2f}" if test is not None else "–",
                 budget_of(r), f"{tps:,.0f}" if tps is not None else "–"]
        lines.append(f"| {r['model']} | {r['task']} | {r.get('seed')} | {scale_of(r)} | {placed.get(id(r), '–')} | "
                     f"{protocol_of(r)} | " + " | ".join(shown) + f" | {diagnosis_of(r)} | `{r['source']}` |")
    return "\n".join(lines)
