"""The report's figures (PNG), each with the caption the report prints under it.

Every figure says what it shows in its title: the accuracy figures the task variant (the LRA tasks' own data:
runs on other data sets never reach them), the scale and the protocol of each row (a self-pretrained row is
labelled [SPT], its bars hatched); the speed figure the device, batch and preset of the benchmark (or that speed
comes from the runs).

1. ``accuracy_by_task.png``: test accuracy per task and LRA-table row (mean ± std over the seeds of one
   configuration), with Mega's and the Mega authors' Transformer's published points.
2. ``accuracy_vs_speed.png``: the LRA paper's Figure 3 (Tay et al., ICLR 2021): one quantity per axis, LRA score
   (y) against speed at one length (x), memory as marker area. Only models with the same task set are plotted
   (the score is their mean test accuracy over exactly those tasks). Speed and memory come from ``make bench``
   at one length L (the length the most of these models were measured at, 4096 on ties, the paper's; skipped
   cells leave a model out and the caption names it); without a benchmark, from the runs' own training tokens/s
   and peak memory on one task of the set.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lra_bench.reporting.published import rows_for
from lra_bench.reporting.runs import TASK_TITLES, TASKS, number
from lra_bench.reporting.tables import row_name


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str
    title: str = ""  # drawn above the plot
    drawn: tuple[str, ...] = ()  # the series drawn (legend labels)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_by_task(rows: list[dict[str, Any]], out: Path) -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        xs = [k + i * width for k, t in enumerate(TASKS) if t in r]
        ys = [r[t].mean for t in TASKS if t in r]
        errs = [r[t].std for t in TASKS if t in r]
        ax.bar(xs, ys, width, yerr=errs, label=_name(r), capsize=2, hatch="//" if r.get("spt") else None)
    published = {p.name: p.scores for p in rows_for()}
    for name, marker in (("Mega", "*"), ("Transformer (Mega authors' reproduction)", "x")):
        pts = [(k + 0.4 - width / 2, v) for k, v in enumerate(published[name]) if v is not None]
        ax.scatter(*zip(*pts), marker=marker, color="black", zorder=5, label=f"{name}, published")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(TASKS))], [TASK_TITLES[t] for t in TASKS])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    title = f"LRA tasks, each on its own data (no quick variants); our rows: {_scales(rows)}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))  # below: never over a bar
    drawn = tuple(ax.get_legend_handles_labels()[1])
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "accuracy_by_task.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Figure(path, title=title, drawn=drawn, caption="Test accuracy (%) of the best-validation checkpoint per LRA task (the task's own data; runs on "
                        "other data sets are not drawn), mean ± std over the seeds of one configuration (bars, labelled "
                        "with their scale; [SPT] and hatched: self-pretrained first), with the published Mega and "
                        "Transformer (Mega Table 2) points.")


# --- accuracy vs speed ---------------------------------------------------------------------------------------

def common_task_set(rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[dict[str, Any]], list[dict[str, Any]]]:
    """(tasks, rows with exactly that task set, the others): the task set the most rows share (more tasks on ties)."""
    sets = {id(r): tuple(t for t in TASKS if t in r) for r in rows}
    counts = Counter(s for s in sets.values() if s)
    if not counts:
        return (), [], rows
    tasks = max(counts, key=lambda s: (counts[s], len(s), [-TASKS.index(t) for t in s]))
    return tasks, [r for r in rows if sets[id(r)] == tasks], [r for r in rows if sets[id(r)] != tasks]


def bench_length(bench: dict[str, Any] | None, models: set[str], length: int | None = None) -> int | None:
    """The benchmark length to plot: ``length`` if given, else the one with the most of ``models`` measured
    (4096, the LRA paper's, then the longest, on ties); None when none of them was measured."""
    if not bench:
        return None
    measured: dict[int, set[str]] = defaultdict(set)
    for b in bench["rows"]:
        if "skipped" not in b and b["model"] in models and b.get("tokens_per_s"):
            measured[b["length"]].add(b["model"])
    if length is not None:
        return length if measured.get(length) else None
    if not measured:
        return None
    return max(measured, key=lambda n: (len(measured[n]), n == 4096, n))


def _name(row: dict[str, Any]) -> str:
    return f"{row_name(row, bold=False)}, {row['scale']}"


def _scales(rows: list[dict[str, Any]]) -> str:
    """``paper preset and reduced``, then ``; from scratch and self-pretrained [SPT]`` when SPT rows are drawn."""
    scales = " and ".join(sorted({r["scale"] for r in rows})) or "no runs"
    if not any(r.get("spt") for r in rows):
        return scales
    return f"{scales}; {'from scratch and ' if any(not r.get('spt') for r in rows) else ''}self-pretrained [SPT]"


def _names(rows: list[dict[str, Any]]) -> str:
    return "; ".join(_name(r) for r in rows) or "none"


@dataclass(frozen=True)
class ScoreSpeed:
    """What the accuracy-vs-speed figure shows: one point per model (label, speed, LRA score %, memory MB)."""

    points: list[tuple[str, float, float, float]]
    tasks: tuple[str, ...]
    length: int | None  # the benchmark length; None when speed comes from the runs
    xlabel: str
    title: str  # where the speed comes from: the benchmark's device, precision, batch and preset, or the runs
    caption: str


def score_vs_speed(rows: list[dict[str, Any]], bench: dict[str, Any] | None, length: int | None = None) -> ScoreSpeed:
    tasks, same, others = common_task_set(rows)
    models = {r["model"] for r in same}
    L = bench_length(bench, models, length)
    points: list[tuple[str, float, float, float]] = []
    left_out: list[str] = []
    if L is not None:
        assert bench is not None
        at_L = {b["model"]: b for b in bench["rows"] if b["length"] == L and "skipped" not in b and b.get("tokens_per_s")}
        skipped = {b["model"]: b["skipped"] for b in bench["rows"] if b["length"] == L and "skipped" in b}
        meta = bench["meta"]
        for r in same:
            score = statistics.mean(r[t].mean for t in tasks)
            if r["model"] in at_L:
                points.append((_name(r), at_L[r["model"]]["tokens_per_s"], score, at_L[r["model"]]["memory_mb"]))
            else:
                left_out.append(f"{_name(r)} ({skipped.get(r['model'], 'not in the benchmark')})")
        xlabel = f"training tokens/s at L = {L} (make bench)"
        title = f"make bench: {meta['device']}, {meta['precision']}, batch {meta['batch']}, preset {meta['task']}"
        speed_text = (f"x: training-step tokens/s of each model's `{meta['task']}` preset at L = {L} from `{bench['path']}` "
                      f"({meta['device']}, {meta['precision']}, batch {meta['batch']}); marker area: that step's memory (MB)")
    else:
        # one task of the set (the one with the most runs of these models), its runs' own measurements
        per_task = Counter({t: sum(len(r["runs"].get(t, ())) for r in same) for t in tasks})
        task = max(tasks, key=lambda t: (per_task[t], -TASKS.index(t))) if tasks else None
        for r in same:
            mine = r["runs"].get(task, [])
            speeds = [v for v in (number(x, "perf/tokens_per_sec") for x in mine) if v is not None]
            memory = [v for v in (number(x, "perf/peak_memory_mb") for x in mine) if v is not None]
            if speeds:
                points.append((_name(r), statistics.mean(speeds), statistics.mean(r[t].mean for t in tasks),
                               statistics.mean(memory) if memory else 0.0))
            else:
                left_out.append(f"{_name(r)} (no tokens/s in its {task} runs)")
        name = TASK_TITLES.get(task, task) if task else "no task"
        xlabel = f"training tokens/s on {name} (runs)"
        speed_text = (f"x: mean training tokens/s (`perf/tokens_per_sec`) of the {name} runs, on their own hardware "
                      "(no `make bench` results); marker area: their peak memory (MB)")
        title = f"speed: the {name} runs' own (their devices and batch sizes; no make bench results)"
    n_runs = sum(len(r["runs"].get(t, ())) for r in same for t in tasks)
    caption = (f"LRA score vs speed. y: mean test accuracy over {', '.join(TASK_TITLES[t] for t in tasks) or 'no task'} "
               f"(mean over seeds per task) of {_names(same)}, from {n_runs} runs; {speed_text}.")
    if left_out:
        caption += f" Not plotted, not measured{' at this length' if L is not None else ''}: {', '.join(left_out)}."
    if others:
        caption += f" Not plotted, other task sets: {_names(others)}."
    return ScoreSpeed(points, tasks, L, xlabel, title, caption)


def accuracy_vs_speed(rows: list[dict[str, Any]], bench: dict[str, Any] | None, out: Path, length: int | None = None) -> Figure:
    data = score_vs_speed(rows, bench, length)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    biggest = max((p[3] for p in data.points), default=1.0) or 1.0
    for label, x, y, memory in data.points:
        ax.scatter([x], [y], s=60 + 1500 * memory / biggest, alpha=0.5)
        ax.annotate(label, (x, y), fontsize=8, ha="center")
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)  # room for the largest markers and their labels
    ax.set_xlabel(data.xlabel)
    ax.set_ylabel(f"LRA score: mean test accuracy over {len(data.tasks)} task(s) (%)")
    title = f"LRA score (LRA tasks on their own data; {_scales(rows)}) vs speed, marker area: memory\n{data.title}"
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out / "accuracy_vs_speed.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(path, data.caption, title, tuple(p[0] for p in data.points))


def figures(rows: list[dict[str, Any]], bench: dict[str, Any] | None, out: Path, length: int | None = None) -> list[Figure]:
    """The figures of the LRA table's rows (runs on the LRA tasks' own data only)."""
    return [accuracy_by_task(rows, out), accuracy_vs_speed(rows, bench, out, length)]
