"""A saved W&B Report comparing models, built with the official ``wandb-workspaces`` library.

    python -m lra_bench.dashboard --entity E --project P [--group G] [--tasks listops,text] [--runs logs]
                                  [--sweep NAME] [--experiment GLOB] [--glob GLOB]
                                  [--bench bench_results] [--title T] [--dry-run [--out reports/dashboard.json]]
    make dashboard ARGS="--entity E --project P [--group G]"

The report (created, or updated in place when the project already has one with the same title) holds:

1. **LRA table**: a snapshot markdown table (mean ± std (n) over the seeds of one configuration of the
   best-checkpoint test accuracy, one row per model and configuration × task, Avg, seed-variance and at-chance
   flags, published rows, and runs on other data apart; ``lra_bench.reporting.tables``, the report's own grouping)
   of the runs found when it was made (``--runs`` result.json files and the project's finished W&B runs, filtered
   by ``--sweep``, ``--experiment``, ``--glob``), then live panels over the finished runs grouped by task and model
   and by every config key that differs between those runs' configurations of one model and task
   (``configurations.varying_keys``: the learning rate of an lr sweep, the data folder of a quick run, the SPT
   recipe ``pretrain.name`` where runs from scratch and self-pretrained runs of one model and task both ran): bar
   charts of ``test/acc`` (mean ± std) and of ``diagnosis/at_chance`` (the fraction of seeds at chance), and the
   runs table with those columns.
2. **Per task**: validation accuracy curves (``val/acc`` against ``trainer/global_step``, one colour per model,
   mean ± std over seeds), and test accuracy against training tokens/s (``perf/tokens_per_sec``) and against peak
   memory (``perf/peak_memory_mb``), one point per run.
3. **Efficiency**: the ``make bench logger=wandb`` run's speed and memory against length
   (``lra_bench.reporting.wandb_tables``: one line per model) and its ``bench/speed_memory`` table.

Training runs are selected by W&B job type (the harness sets it to the task name) and, with ``--group``, by
group (a sweep); bench runs by job type ``bench``. Stage 1 of a self-pretrained run (job type ``pretrain``, no
accuracy) is thus in no run set, as it is in no snapshot row: its run (stage 2) carries its figures. ``spec_keys``
lists every metric, summary, config and run key each panel reads; the tests check them against a real offline run
(a real SPT run too) and a real bench output.

``--dry-run`` needs no network: it writes the report's spec (the JSON ``save`` would send) with the run sets
not yet bound to the project (binding looks up the project's internal id on the server). The W&B Avg column
exists only in the snapshot table: panels cannot average per-task means. Rerun to refresh the snapshot.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from lra_bench.reporting.configurations import varying_keys
from lra_bench.reporting.runs import TASK_TITLES, TASKS, add_filter_arguments, bench_results, local_runs, merge, select, wandb_runs
from lra_bench.reporting.tables import SPREAD, flags_legend, lra_table, table_rows, variant_rows, variant_table
from lra_bench.reporting.wandb_tables import QUANTITIES, STEP, TABLE, series_key

log = logging.getLogger("lra_bench.reporting.dashboard")

TITLE = "lra_bench: model comparison"
STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger logs every metric with it
# summary columns of the runs tables (lra_bench.train writes these into every run's summary)
SUMMARY_COLUMNS = ("test/acc", "val/acc_best", "diagnosis/at_chance", "perf/tokens_per_sec", "perf/peak_memory_mb")


# --- the blocks -----------------------------------------------------------------------------------------------

def run_filter(*parts: str, group: str | None = None) -> str:
    return " and ".join([*parts, *([f"Metric('Group') = {group!r}"] if group else [])])


def runset(wr: Any, bind: tuple[str, str] | None, name: str, filters: str, groupby: list[str], columns: bool = True):
    entity, project = bind or ("", "")
    pinned = (["run:displayName", "config:model.value.name", "config:task.value.name", "config:seed.value",
               *[f"summary:{k}" for k in SUMMARY_COLUMNS]] if columns else [])
    return wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=groupby, pinned_columns=pinned)


def lra_table_blocks(wr: Any, bind, group: str | None, tasks: tuple[str, ...], snapshot: str, split_by: list[str]) -> list:
    runs = runset(wr, bind, "finished training runs",
                  run_filter("Metric('State') = 'finished'", f"Metric('JobType') in {list(tasks)}", group=group),
                  ["config.task.name", "config.model.name", *[f"config.{k}" for k in split_by]])
    panels = [
        wr.BarPlot(title="test accuracy (best checkpoint), mean ± std over seeds, per task and model", metrics=["test/acc"],
                   groupby_aggfunc="mean", groupby_rangefunc="stddev", max_bars_to_show=60,
                   layout=wr.Layout(x=0, y=0, w=16, h=10)),
        wr.BarPlot(title="runs at chance (fraction of seeds; lra_bench.training.diagnosis)", metrics=["diagnosis/at_chance"],
                   groupby_aggfunc="mean", groupby_rangefunc="minmax", max_bars_to_show=60, range_x=(0, 1),
                   layout=wr.Layout(x=16, y=0, w=8, h=10)),
    ]
    return [wr.H1("LRA table"), wr.MarkdownBlock(snapshot), wr.PanelGrid(runsets=[runs], panels=panels)]


def task_blocks(wr: Any, bind, group: str | None, task: str, split_by: list[str]) -> list:
    runs = runset(wr, bind, f"{TASK_TITLES[task]} runs", run_filter(f"Metric('JobType') = {task!r}", group=group),
                  ["config.model.name", *[f"config.{k}" for k in split_by]])
    panels = [
        wr.LinePlot(title=f"{TASK_TITLES[task]}: validation accuracy (colour: model; mean ± std over seeds)", x=STEP_KEY,
                    y=["val/acc"], groupby=wr.Config("model.name"), groupby_aggfunc="mean", groupby_rangefunc="stddev",
                    title_x="optimizer step", title_y="validation accuracy", layout=wr.Layout(x=0, y=0, w=12, h=8)),
        wr.ScatterPlot(title=f"{TASK_TITLES[task]}: test accuracy vs training tokens/s", x=wr.SummaryMetric("perf/tokens_per_sec"),
                       y=wr.SummaryMetric("test/acc"), log_x=True, layout=wr.Layout(x=12, y=0, w=6, h=8)),
        wr.ScatterPlot(title=f"{TASK_TITLES[task]}: test accuracy vs peak memory (MB)", x=wr.SummaryMetric("perf/peak_memory_mb"),
                       y=wr.SummaryMetric("test/acc"), log_x=True, layout=wr.Layout(x=18, y=0, w=6, h=8)),
    ]
    return [wr.H2(TASK_TITLES[task]), wr.PanelGrid(runsets=[runs], panels=panels)]


def bench_blocks(wr: Any, bind, models: list[str]) -> list:
    runs = runset(wr, bind, "make bench runs", "Metric('JobType') = 'bench'", [], columns=False)
    panels = [
        wr.LinePlot(title=f"make bench: {label} vs sequence length", x=STEP, y=[series_key(quantity, m) for m in models],
                    log_x=True, log_y=True, title_x="sequence length", title_y=label,
                    layout=wr.Layout(x=12 * (i % 2), y=8 * (i // 2), w=12, h=8))
        for i, (quantity, label) in enumerate(QUANTITIES.items())
    ]
    panels.append(wr.WeavePanelSummaryTable(table_name=TABLE, layout=wr.Layout(x=0, y=16, w=24, h=10)))
    return [wr.H1("Efficiency (make bench)"),
            wr.P("Forward + backward step speed and memory of each model's preset against sequence length, from the "
                 "make bench logger=wandb runs (job type bench; lra_bench.reporting.wandb_tables)."),
            wr.PanelGrid(runsets=[runs], panels=panels)]


def build_report(entity: str, project: str, group: str | None, tasks: tuple[str, ...], bench_models: list[str],
                 snapshot: str, title: str = TITLE, bind: bool = True, split_by: list[str] = ()):
    """The ``wandb_workspaces`` Report. ``bind=False`` leaves the run sets unbound to the project, so building
    its spec needs no server (the library looks up the project's internal id for a bound run set). ``split_by``:
    config keys the live run sets group by beside task and model (``configurations.varying_keys`` of the runs
    found), so that a live group, like a snapshot cell, holds one configuration."""
    import wandb_workspaces.reports.v2 as wr

    target = (entity, project) if bind else None
    scope = f"group `{group}`" if group else "every group"
    blocks = [wr.P(f"Runs of {entity}/{project}, {scope}: training runs by task (W&B job type), make bench runs "
                   f"(job type bench). Made by python -m lra_bench.dashboard (make dashboard); the panels are live, the "
                   f"snapshot table is refreshed by rerunning it.")]
    blocks += lra_table_blocks(wr, target, group, tasks, snapshot, list(split_by))
    blocks += [wr.H1("Accuracy, speed and memory per task")]
    for task in tasks:
        blocks += task_blocks(wr, target, group, task, list(split_by))
    blocks += bench_blocks(wr, target, bench_models)
    full_title = f"{title} ({group})" if group else title
    return wr.Report(entity=entity, project=project, title=full_title, description="LRA model comparison (lra_bench)",
                     blocks=blocks, width="fluid")


def spec_of(report: Any) -> dict[str, Any]:
    """The report as the JSON the library sends to W&B (``Report.save``)."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


# --- what each panel reads ------------------------------------------------------------------------------------

KINDS = ("history", "summary", "config", "run", "tables")


def _config_key(backend: str) -> str:
    """``model.value.name`` or ``seed.value`` (the backend's nested-config paths) -> ``model.name``, ``seed``."""
    return ".".join(p for i, p in enumerate(backend.split(".")) if not (i == 1 and p == "value"))


def _add(keys: dict[str, set[str]], section: str, name: str) -> None:
    """One reference by section (``config``, ``summary``, anything else a run attribute) and backend name."""
    if section == "config":
        keys["config"].add(_config_key(name))
    else:
        keys["summary" if section == "summary" else "run"].add(name)


def _table_keys(node: Any) -> list[str]:
    """Table keys a Weave panel picks from the run summary (``pick`` op on ``run-summary``)."""
    found = []
    if isinstance(node, dict):
        if node.get("name") == "pick" and isinstance(node.get("inputs"), dict):
            found.append(node["inputs"].get("key", {}).get("val"))
        for v in node.values():
            found += _table_keys(v)
    elif isinstance(node, list):
        for v in node:
            found += _table_keys(v)
    return [k for k in found if k]


def spec_keys(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run set and panel of the spec (``grid``: the name of its grid's run set) with the keys it reads, by
    kind: ``history`` (logged metrics), ``summary`` (run summary), ``config`` (dotted config paths), ``run`` (run
    attributes), ``tables`` (tables in the run summary)."""
    out = []
    for block in spec["spec"]["blocks"]:
        if block.get("type") != "panel-grid":
            continue
        meta = block["metadata"]
        grid = meta["runSets"][0]["name"]  # panels are told apart by the run set of their grid
        for rs in meta["runSets"]:
            keys: dict[str, set[str]] = {k: set() for k in KINDS}
            for f in rs.get("filters", {}).get("filters", []):
                _add(keys, f["key"]["section"], f["key"]["name"])
            for g in rs.get("grouping", []):
                _add(keys, g["section"], g["name"])
            for order in rs.get("sort", {}).get("keys", []):
                _add(keys, order["key"]["section"], order["key"]["name"])
            for column in rs.get("runFeed", {}).get("columnOrder", []):  # "<section>:<name>"
                _add(keys, *column.split(":", 1))
            out.append({"grid": grid, "kind": "run set", "title": rs["name"], **{k: sorted(v) for k, v in keys.items()}})
        for panel in meta["panelBankSectionConfig"]["panels"]:
            cfg, kind = panel.get("config", {}), panel.get("viewType")
            keys = {k: set() for k in KINDS}
            if kind == "Run History Line Plot":
                keys["history"] |= {cfg["xAxis"], *cfg.get("metrics", [])} - {"_step"}
                if cfg.get("groupBy"):
                    _add(keys, "config", cfg["groupBy"])
            elif kind == "Scatter Plot":  # axes are "<section>:<name>"
                for axis in ("xAxis", "yAxis", "zAxis"):
                    if cfg.get(axis):
                        _add(keys, *cfg[axis].split(":", 1))
            elif kind == "Bar Chart":  # one bar per run (or group): the run's summary value of each metric
                keys["summary"] |= set(cfg.get("metrics", []))
            elif kind == "Weave":
                keys["tables"] |= set(_table_keys(cfg))
            else:
                raise ValueError(f"spec_keys does not know panel type {kind!r}")
            title = cfg.get("chartTitle") or kind
            out.append({"grid": grid, "kind": kind, "title": title, **{k: sorted(v) for k, v in keys.items()}})
    return out


# --- making it ------------------------------------------------------------------------------------------------

def bench_models(bench_root: Path) -> list[str]:
    """Models in the local ``make bench`` results, else the benchmark's default models (conf/bench.yaml)."""
    models = [r["model"] for b in bench_results(bench_root) for r in b["rows"]] if bench_root.is_dir() else []
    if not models:
        from omegaconf import OmegaConf

        from lra_bench.config import CONFIG_DIR

        models = list(OmegaConf.load(CONFIG_DIR / "bench.yaml").models)
    return list(dict.fromkeys(models))


def snapshot_table(runs: list[dict[str, Any]], sources: str, spread: float) -> str:
    """The report's LRA table (``tables``: one configuration a cell), and its table of runs on other data."""
    if not runs:
        return f"No finished runs found ({sources}) when this report was made; rerun `make dashboard` to fill this table."
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (f"Snapshot of {len(runs)} finished runs ({sources}) at {stamp}: test accuracy (%) of the best-validation "
            f"checkpoint, mean ± std (n) over the seeds of one configuration.\n\n{lra_table(table_rows(runs, spread))}"
            f"\n\n{flags_legend(spread)}")
    others = variant_rows(runs, spread)
    if others:
        text += f"\n\nRuns on other data (not LRA tasks; not comparable with the table above):\n\n{variant_table(others)}"
    return text


def existing_report_id(api: Any, entity: str, project: str, title: str) -> str | None:
    """The id of the project's report with this title, so saving updates it instead of adding another."""
    try:
        for report in api.reports(f"{entity}/{project}"):
            if report.display_name == title:
                return report.id
    except Exception as e:  # a new project has no reports (and the query may say so with an error)
        log.info("no existing reports found in %s/%s (%s)", entity, project, e)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lra_bench.dashboard", description=__doc__.splitlines()[0])
    p.add_argument("--entity", default=None, help="W&B entity (default: your default entity; a placeholder with --dry-run)")
    p.add_argument("--project", default="lra_bench", help="W&B project the runs log to (conf/logger/wandb.yaml)")
    p.add_argument("--group", default=None, help="only runs of this W&B group (a sweep's name)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks to show")
    p.add_argument("--runs", default="logs", help="folder of result.json files for the snapshot table")
    p.add_argument("--bench", default="bench_results", help="make bench results (the model names of its charts)")
    p.add_argument("--spread", type=float, default=SPREAD, help="flag cells whose seeds differ by more than this (points)")
    add_filter_arguments(p)
    p.add_argument("--title", default=TITLE)
    p.add_argument("--dry-run", action="store_true", help="write the report's spec as JSON, touch no server")
    p.add_argument("--out", default="reports/dashboard.json", help="where --dry-run writes the spec")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        print(f"error: unknown task(s) {', '.join(unknown)}; valid: {', '.join(TASKS)}")
        return 2
    runs = local_runs(Path(args.runs)) if Path(args.runs).is_dir() else []
    sources = f"result.json under {args.runs}"
    models = bench_models(Path(args.bench))

    def pick(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return select(found, Path(args.runs), args.sweep, args.experiment, args.glob)

    if args.dry_run:
        entity = args.entity or "<your default entity>"
        runs = pick(runs)
        report = build_report(entity, args.project, args.group, tasks, models, snapshot_table(runs, sources, args.spread),
                              args.title, bind=False, split_by=varying_keys(runs))
        spec = spec_of(report)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"dry_run": True, "entity": entity, "project": args.project, "group": args.group,
                                   "note": "run sets are bound to entity/project (its internal id looked up on the "
                                           "server) when saved; nothing was sent",
                                   "panels": spec_keys(spec), "spec": spec}, indent=1))
        print(f"wrote the report spec ({sum(1 for k in spec_keys(spec) if k['kind'] != 'run set')} panels) to {out}")
        return 0

    import wandb

    api = wandb.Api()
    entity = args.entity or api.default_entity
    try:
        runs = merge(runs, wandb_runs(f"{entity}/{args.project}", args.group))
        sources += f" and finished W&B runs of {entity}/{args.project}"
    except Exception as e:  # the snapshot falls back to local runs; the live panels do not need it
        log.warning("could not read W&B runs of %s/%s (%s); the snapshot table uses local runs only", entity, args.project, e)
    runs = pick(runs)
    report = build_report(entity, args.project, args.group, tasks, models, snapshot_table(runs, sources, args.spread), args.title,
                          split_by=varying_keys(runs))
    report.id = existing_report_id(api, entity, args.project, report.title) or ""
    updating = bool(report.id)
    report.save()
    print(f"{'updated' if updating else 'created'} the W&B report {report.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
