"""The LRA comparison report: accuracy table, efficiency table, plots, markdown and a self-contained HTML page.

    python -m lra_bench.report [--runs logs] [--bench bench_results] [--out reports/lra] [--spread 5]
                               [--sweep NAME] [--experiment 'lra/mega-*'] [--glob 'multiruns/lr-*/*']
                               [--plot-length L] [--wandb-path entity/project [--group GROUP]] [--push]
    make report

Sources (``runs.py``): every ``result.json`` under ``--runs`` (each training job writes one; a malformed one is
skipped with a warning naming it), and, when ``--wandb-path`` is given and the W&B API is reachable, the finished
runs of that project (optionally one group); ``--sweep``, ``--experiment`` and ``--glob`` keep only the matching
runs. A cell holds the seeds of one configuration (``configurations.py``: same model, task and data, experiment
and resolved settings apart from the seed); runs that differ otherwise are other rows, named by what differs, and
runs on another data set of a task (the quick short ListOps) go to their own table, never to an LRA column. Cells
are the mean ± std (n) of test accuracy (best-validation checkpoint) over seeds, flagged where seeds disagree by
more than ``--spread`` points or some seeds are at chance, and marked where the runs are at chance
(``tables.py``). A run counts as "paper preset" when it used
``experiment=lra/<model>-<task>`` with no overrides beyond seeds, paths, loggers and devices; otherwise it is
"reduced". Runs self-pretrained first (``pretrain=spt``: result.json ``protocol: spt``) are another protocol: rows
of their own marked [SPT] (a paper preset under SPT is still "paper preset"), their budget over both stages in the
runs table; stage 1's own result.json (``<run>/pretrain/``) is part of its run, not a run. The published numbers
(``published.py``, the SPT paper's among them) are reference rows. Figures: ``plots.py``; HTML:
``html.py``. With ``--push`` the tables and plots also go to a W&B run (job_type report). Fully offline otherwise.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lra_bench.reporting.configurations import spt_recipe
from lra_bench.reporting.html import markdown_to_html
from lra_bench.reporting.plots import figures
from lra_bench.reporting.runs import (TASKS, add_filter_arguments, bench_results, local_runs, merge, pick_bench, scale_of,
                                      select, wandb_runs)
from lra_bench.reporting.tables import (SPREAD, configurations_list, efficiency_table, flags_legend, fmt_cell, lra_table,
                                        row_name, runs_table, table_rows, variant_rows, variant_table)

__all__ = ["build", "push", "main", "local_runs", "wandb_runs", "table_rows", "variant_rows", "lra_table", "fmt_cell", "scale_of"]

log = logging.getLogger("lra_bench.reporting.report")


def build(runs: list[dict[str, Any]], bench_root: Path, out: Path, spread: float = SPREAD,
          plot_length: int | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and the PNGs into ``out``; return the rows and the paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows, others = table_rows(runs, spread), variant_rows(runs, spread)
    bench = pick_bench(bench_results(bench_root) if bench_root.is_dir() else [])
    figs = figures(rows, bench, out, plot_length)
    md = ["# lra_bench report", "",
          f"{len(runs)} runs{spt_note(runs)}. Test accuracy (%) of the best-validation checkpoint, mean ± std (n) over the "
          "seeds of one configuration; 'paper preset' = experiment=lra/<model>-<task> as published, 'reduced' = smaller "
          "models, data or budgets. Avg (6) over all six tasks; Avg (5) over the five before Path-X, the average the LRA "
          "papers print when Path-X failed (✗). Published rows show their Avg exactly as their paper prints it.", "",
          "## LRA accuracy", "", lra_table(rows), "", flags_legend(spread), ""]
    named = configurations_list(rows + others)
    if named:
        md += ["### What the named rows change", "", named, ""]
    if others:
        md += ["## Runs on other data (not LRA tasks)", "",
               "Runs on another data set of a task (the quick short ListOps, a small easy Pathfinder): not comparable "
               "with the LRA table or the published numbers.", "", variant_table(others), ""]
    for fig in figs:
        md += [f"![{fig.path.stem}]({fig.path.name})", "", f"*{fig.caption}*", ""]
    if bench:
        md += ["## Efficiency (make bench)", "", efficiency_table(bench), ""]
    md += ["## Runs", "", runs_table(runs, rows + others), ""]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(markdown_to_html(text, out))
    return {"rows": rows, "other_rows": others, "markdown": out / "report.md", "html": out / "report.html", "images": [f.path for f in figs],
            "captions": {f.path.stem: f.caption for f in figs}}


def spt_note(runs: list[dict[str, Any]]) -> str:
    """`` (2 self-pretrained first, [SPT] rows; their 2 stage-1 results are part of them, not runs)``, or ''."""
    spt = sum(spt_recipe(r) is not None for r in runs)
    if not spt:
        return ""
    folded = sum("stage_one" in r for r in runs)
    return (f" ({spt} self-pretrained first: [SPT] rows; their {folded} stage-1 result(s) in `<run>/pretrain/` are "
            "part of them, not runs)")


def push(result: dict[str, Any], project: str, group: str | None) -> None:
    import wandb

    from lra_bench.training.loggers import resolve_wandb_mode

    mode, note = resolve_wandb_mode("auto")
    if note:
        log.warning(note)
    run = wandb.init(project=project, group=group, job_type="report", name="lra-report", mode=mode)
    columns = ["row", "model", "scale", "protocol", *TASKS, "avg"]
    data = [[row_name(r, bold=False), r["model"], r["scale"], "spt" if r["spt"] else "scratch",
             *[r[t].mean if t in r else None for t in TASKS], r["avg"]] for r in result["rows"]]
    run.log({"report/lra_table": wandb.Table(columns=columns, data=data),
             **{f"report/{p.stem}": wandb.Image(str(p), caption=result["captions"].get(p.stem)) for p in result["images"]}})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lra_bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="logs", help="folder searched for result.json files")
    p.add_argument("--bench", default="bench_results", help="folder with make bench results")
    p.add_argument("--out", default="reports/lra")
    p.add_argument("--spread", type=float, default=SPREAD, help="flag cells whose seeds differ by more than this (points)")
    add_filter_arguments(p)
    p.add_argument("--plot-length", type=int, default=None, help="benchmark length for the accuracy-vs-speed plot")
    p.add_argument("--wandb-path", default=None, help="entity/project to read finished runs from (needs a network)")
    p.add_argument("--group", default=None, help="W&B group (a sweep) to read, and to push the report into")
    p.add_argument("--push", action="store_true", help="also log the tables and plots to a W&B run")
    p.add_argument("--project", default="lra_bench", help="W&B project for --push")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = local_runs(Path(args.runs)) if Path(args.runs).is_dir() else []
    if args.wandb_path:
        try:
            runs = merge(runs, wandb_runs(args.wandb_path, args.group))
        except Exception as e:  # offline, no credentials, unknown project: the local report still gets made
            log.warning("could not read W&B runs from %s (%s); the report uses local runs only", args.wandb_path, e)
    found = len(runs)
    runs = select(runs, Path(args.runs), args.sweep, args.experiment, args.glob)
    if not runs:
        chosen = ", ".join(f"--{k} {v}" for k, v in (("sweep", args.sweep), ("experiment", args.experiment), ("glob", args.glob)) if v)
        print(f"error: no result.json under {args.runs} (train something first, e.g. `make lra-task`)" if not found else
              f"error: none of the {found} runs found under {args.runs} matches {chosen}")
        return 2
    result = build(runs, Path(args.bench), Path(args.out), args.spread, args.plot_length)
    if args.push:
        push(result, args.project, args.group)
    print(result["markdown"].read_text().split("\n## Runs\n")[0])
    print(f"wrote {result['markdown']}, {result['html']} and {', '.join(str(p) for p in result['images'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
