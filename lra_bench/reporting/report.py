"""The LRA comparison report: accuracy table, efficiency table, plots, markdown and a self-contained HTML page.

    python -m lra_bench.report [--runs logs] [--bench bench_results] [--out reports/lra]
                               [--wandb-path entity/project [--group GROUP]] [--push]
    make report

Sources: every ``result.json`` under ``--runs`` (each training job writes one), and, when ``--wandb-path`` is
given and the W&B API is reachable, the finished runs of that project (optionally one group). Runs are
grouped by model and task; cells are the mean +- std of test accuracy (best-validation checkpoint) over
seeds. A run counts as "paper preset" when it used ``experiment=lra/<model>-<task>`` with no overrides
beyond seeds, paths, loggers and devices; otherwise it is "reduced" (quick presets, shrunk models, fewer
steps). The published numbers (``lra_bench/reporting/published.py``: LRA Table 1, Mega Table 2, ...) are reference rows. With
``--push`` the tables and plots also go to a W&B run (job_type report). Fully offline otherwise.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from lra_bench.reporting.published import FAIL, five_task_avg, rows_for

log = logging.getLogger("lra_bench.reporting.report")

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image", "pathfinder": "Pathfinder", "pathx": "Path-X"}
NEUTRAL_OVERRIDES = ("seed=", "paths.", "logger", "trainer.accelerator=", "trainer.devices=", "trainer.precision=",
                     "trainer=", "hydra", "rerun=", "sweep_name=", "+sweep=", "task.datamodule.num_workers=")


def scale_of(run: dict[str, Any]) -> str:
    experiment = run.get("experiment") or ""
    if experiment != f"lra/{run['model']}-{run['task']}":
        return "reduced"
    extra = [o for o in run.get("overrides") or [] if not o.startswith(("experiment=", *NEUTRAL_OVERRIDES))]
    return "reduced" if extra else "paper preset"


def local_runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(Path(root).rglob("result.json")):
        if "previous-" in str(path.parent.name):
            continue
        try:
            run = json.loads(path.read_text())
        except ValueError:
            log.warning("skipping unreadable %s", path)
            continue
        if "model" in run and "task" in run:
            runs.append(run | {"source": str(path.parent)})
    return runs


def wandb_runs(path: str, group: str | None) -> list[dict[str, Any]]:
    """Finished runs of a W&B project (needs the network and credentials)."""
    import wandb

    api = wandb.Api(timeout=20)
    filters = {"state": "finished"} | ({"group": group} if group else {})
    out = []
    for r in api.runs(path, filters=filters):
        cfg, summ = r.config, r.summary
        model, task = (cfg.get("model") or {}).get("name"), (cfg.get("task") or {}).get("name")
        if not model or not task or "test/acc" not in summ:
            continue
        out.append({"model": model, "task": task, "seed": cfg.get("seed"), "test/acc": summ.get("test/acc"),
                    "val/acc_best": summ.get("val/acc_best"), "perf/tokens_per_sec": summ.get("perf/tokens_per_sec"),
                    "perf/peak_memory_mb": summ.get("perf/peak_memory_mb"), "experiment": summ.get("experiment"),
                    "overrides": summ.get("overrides") or [], "source": f"wandb:{r.path}"})
    return out


def table_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, scale): per task mean/std of test accuracy (%) and run counts."""
    cells: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        acc = r.get("test/acc")
        if isinstance(acc, (int, float)) and not math.isnan(acc):
            cells[(r["model"], scale_of(r))][r["task"]].append(100 * acc)
    rows = []
    for (model, scale), by_task in sorted(cells.items()):
        row: dict[str, Any] = {"model": model, "scale": scale}
        for t in TASKS:
            vals = by_task.get(t)
            if vals:
                row[t] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))
        means = [row[t][0] for t in TASKS if t in row]
        row["avg"] = statistics.mean(means) if len(means) == len(TASKS) else None
        row["avg5"] = five_task_avg(tuple(row[t][0] if t in row else None for t in TASKS))
        rows.append(row)
    return rows


def fmt_cell(cell: tuple[float, float, int] | None) -> str:
    if cell is None:
        return "–"
    mean, std, n = cell
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f}"


def lra_table(rows: list[dict[str, Any]]) -> str:
    """Our rows (six-task Avg, and the five-task Avg the LRA papers use) above the published rows of the same
    models, each with its Avg exactly as its paper prints it and its source."""
    head = "| model | runs | " + " | ".join(TASK_TITLES[t] for t in TASKS) + " | Avg (6) | Avg (5, no Path-X) | source |"
    lines = [head, "|---|---|" + "---|" * (len(TASKS) + 3)]
    for r in rows:
        avg = f"{r['avg']:.2f}" if r["avg"] is not None else "–"
        avg5 = f"{r['avg5']:.2f}" if r.get("avg5") is not None else "–"
        lines.append(f"| **{r['model']}** | {r['scale']} | " + " | ".join(fmt_cell(r.get(t)) for t in TASKS) + f" | {avg} | {avg5} | ours |")
    for p in rows_for({r["model"] for r in rows} | {"mega", "mega_chunk", "transformer", "s4"}):
        shown = ["✗" if v is FAIL else f"{v:.2f}" for v in p.scores]
        six, five = (f"{p.avg:.2f}", "–") if p.scores[-1] is not FAIL else ("–", f"{p.avg:.2f}")
        source = f"{p.source} ({p.note})" if p.note else p.source
        lines.append(f"| {p.name} | published | " + " | ".join(shown) + f" | {six} | {five} | {source} |")
    return "\n".join(lines)


def bench_results(root: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(Path(root).glob("*/results.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if "rows" in data and "meta" in data and "peak_flops" in data.get("meta", {}):
            found.append(data | {"path": str(path)})
    return found


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


def plots(rows: list[dict[str, Any]], runs: list[dict[str, Any]], bench: dict[str, Any] | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # 1. accuracy per task by model (ours), with Mega's and the Mega authors' Transformer's published points
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        xs = [k + i * width for k, t in enumerate(TASKS) if t in r]
        ys = [r[t][0] for t in TASKS if t in r]
        errs = [r[t][1] for t in TASKS if t in r]
        ax.bar(xs, ys, width, yerr=errs, label=f"{r['model']} ({r['scale']})", capsize=2)
    published = {p.name: p.scores for p in rows_for()}
    for name, marker in (("Mega", "*"), ("Transformer (Mega authors' reproduction)", "x")):
        pts = [(k + 0.4 - width / 2, v) for k, v in enumerate(published[name]) if v is not None]
        ax.scatter(*zip(*pts), marker=marker, color="black", zorder=5, label=f"{name}, published")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(TASKS))], [TASK_TITLES[t] for t in TASKS])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_task.png", dpi=120)
    plt.close(fig)
    paths.append(out / "accuracy_by_task.png")

    # 2. accuracy vs speed, marker size = memory (the LRA paper's figure)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_model[r["model"]].append(r)
    bench_rows = {}
    if bench:
        good = [b for b in bench["rows"] if "skipped" not in b and "speed_vs_transformer" in b]
        length = max((b["length"] for b in good), default=None)
        bench_rows = {b["model"]: b for b in good if b["length"] == length}
    for model, model_runs in sorted(by_model.items()):
        accs = [100 * r["test/acc"] for r in model_runs if isinstance(r.get("test/acc"), (int, float))]
        if not accs:
            continue
        if model in bench_rows:
            speed, memory, xlabel = bench_rows[model]["speed_vs_transformer"], bench_rows[model]["memory_mb"], "speed vs the Transformer (benchmark)"
        else:
            speed = statistics.mean(r.get("perf/tokens_per_sec") or 0 for r in model_runs)
            memory = statistics.mean(r.get("perf/peak_memory_mb") or 0 for r in model_runs)
            xlabel = "training tokens/s (runs)"
        ax.scatter([speed], [statistics.mean(accs)], s=max(memory, 1) / 5, alpha=0.5)
        ax.annotate(model, (speed, statistics.mean(accs)), fontsize=8, ha="center")
    ax.set_xlabel(xlabel if by_model else "speed")
    ax.set_ylabel("mean test accuracy over its runs (%)")
    ax.set_title("accuracy vs speed (marker area: memory)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_speed.png", dpi=120)
    plt.close(fig)
    paths.append(out / "accuracy_vs_speed.png")
    return paths


def inline(text: str) -> str:
    """Escape one line of markdown, with `code` and **bold** as HTML."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def markdown_to_html(md: str, images: list[Path]) -> str:
    """A small markdown subset (headings, paragraphs, pipe tables, `code`, **bold**) to HTML, images embedded
    as data URIs."""
    out, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[inline(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</tbody></table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        out.append(f'<figure><img alt="{img.stem}" src="data:image/png;base64,{data}"><figcaption>{img.stem}</figcaption></figure>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>lra_bench report</title><style>{style}</style></head><body>{''.join(out)}</body></html>"


def build(runs: list[dict[str, Any]], bench_root: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(runs)
    benches = bench_results(bench_root) if bench_root.is_dir() else []
    bench = next((b for b in benches if b["meta"].get("task") == "text"), benches[0] if benches else None)
    md = ["# lra_bench report", "",
          f"{len(runs)} runs. Test accuracy (%) of the best-validation checkpoint, mean ± std over seeds; "
          "'paper preset' = experiment=lra/<model>-<task> as published, 'reduced' = smaller models, data or budgets. "
          "Avg (6) over all six tasks; Avg (5) over the five before Path-X, the average the LRA papers print when "
          "Path-X failed (✗). Published rows show their Avg exactly as their paper prints it.", "",
          "## LRA accuracy", "", lra_table(rows), ""]
    if bench:
        md += ["## Efficiency (make bench)", "", efficiency_table(bench), ""]
    md += ["## Runs", "", "| model | task | seed | scale | val acc | test acc | tokens/s | source |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["model"], str(r.get("seed")))):
        acc = lambda k: f"{100 * r[k]:.2f}" if isinstance(r.get(k), (int, float)) and not math.isnan(r[k]) else "–"  # noqa: E731
        tps = r.get("perf/tokens_per_sec")
        md.append(f"| {r['model']} | {r['task']} | {r.get('seed')} | {scale_of(r)} | {acc('val/acc_best')} | {acc('test/acc')} | "
                  f"{tps:,.0f} | {r['source']} |" if isinstance(tps, (int, float)) and not math.isnan(tps) else
                  f"| {r['model']} | {r['task']} | {r.get('seed')} | {scale_of(r)} | {acc('val/acc_best')} | {acc('test/acc')} | – | {r['source']} |")
    text = "\n".join(md) + "\n"
    images = plots(rows, runs, bench, out)
    (out / "report.md").write_text(text + "".join(f"\n![{p.stem}]({p.name})\n" for p in images))
    (out / "report.html").write_text(markdown_to_html(text, images))
    return {"rows": rows, "markdown": out / "report.md", "html": out / "report.html", "images": images}


def push(result: dict[str, Any], project: str, group: str | None) -> None:
    import wandb

    from lra_bench.training.loggers import resolve_wandb_mode

    mode, note = resolve_wandb_mode("auto")
    if note:
        log.warning(note)
    run = wandb.init(project=project, group=group, job_type="report", name="lra-report", mode=mode)
    columns = ["model", "scale", *TASKS, "avg"]
    data = [[r["model"], r["scale"], *[r[t][0] if t in r else None for t in TASKS], r["avg"]] for r in result["rows"]]
    run.log({"report/lra_table": wandb.Table(columns=columns, data=data), **{f"report/{p.stem}": wandb.Image(str(p)) for p in result["images"]}})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lra_bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="logs", help="folder searched for result.json files")
    p.add_argument("--bench", default="bench_results", help="folder with make bench results")
    p.add_argument("--out", default="reports/lra")
    p.add_argument("--wandb-path", default=None, help="entity/project to read finished runs from (needs a network)")
    p.add_argument("--group", default=None, help="W&B group (a sweep) to read, and to push the report into")
    p.add_argument("--push", action="store_true", help="also log the tables and plots to a W&B run")
    p.add_argument("--project", default="lra_bench", help="W&B project for --push")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = local_runs(Path(args.runs)) if Path(args.runs).is_dir() else []
    if args.wandb_path:
        try:
            runs += wandb_runs(args.wandb_path, args.group)
        except Exception as e:  # offline, no credentials, unknown project: the local report still gets made
            log.warning("could not read W&B runs from %s (%s); the report uses local runs only", args.wandb_path, e)
    if not runs:
        print(f"error: no result.json under {args.runs} (train something first, e.g. `make lra-task`)")
        return 2
    result = build(runs, Path(args.bench), Path(args.out))
    if args.push:
        push(result, args.project, args.group)
    print(result["markdown"].read_text().split("## Runs")[0])
    print(f"wrote {result['markdown']}, {result['html']} and {', '.join(str(p) for p in result['images'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
