"""Where the report's numbers come from: finished runs (``result.json`` files, W&B) and ``make bench`` outputs.

A run is a dict with at least ``model``, ``task``, ``seed`` and ``test/acc`` (test accuracy of the
best-validation checkpoint, a fraction), as ``lra_bench.train`` writes it, plus ``source`` (its folder or W&B
path), ``config`` (its resolved config, flattened; None when its folder keeps none) and ``wandb_id``. A file that
cannot be reported (not a JSON object, no model or task name, an accuracy outside [0, 1]) is skipped with one
warning naming it and why. Stage 1 of a self-pretrained run (``<run>/pretrain/result.json``, ``stage: pretrain``; a
W&B run of job type ``pretrain``) is part of its run, never a run of its own: its figures are in the run's
``pretrain/*`` and ``budget/*`` keys. ``scale_of`` tells paper-preset runs from reduced ones; ``at_chance`` reads
the run's chance diagnosis (``lra_bench.training.diagnosis``); ``select`` applies the report's filters.
"""

from __future__ import annotations

import json
import logging
import math
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from lra_bench.reporting.configurations import flatten, neutral_override, stored_config

log = logging.getLogger("lra_bench.reporting.runs")

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image", "pathfinder": "Pathfinder", "pathx": "Path-X"}
ACCURACY_KEYS = ("test/acc", "val/acc_best")  # fractions in [0, 1]
# a run without a diagnosis (older result.json) counts as at chance when its best validation accuracy is within
# this much of the validation split's majority-class rate
CHANCE_MARGIN = 0.01


def scale_of(run: dict[str, Any]) -> str:
    """'paper preset' for ``experiment=lra/<model>-<task>`` with only neutral overrides (``configurations.neutral``:
    seeds, paths, loggers, devices), else 'reduced'."""
    experiment = run.get("experiment") or ""
    if experiment != f"lra/{run['model']}-{run['task']}":
        return "reduced"
    return "reduced" if any(not neutral_override(o) for o in run.get("overrides") or []) else "paper preset"


def number(run: dict[str, Any], key: str) -> float | None:
    """A finite number under ``key``, else None."""
    v = run.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def at_chance(run: dict[str, Any]) -> bool:
    """The run's own diagnosis (``diagnosis: at_chance``); for a run without one, whether its best validation
    accuracy is within ``CHANCE_MARGIN`` of the validation majority-class rate."""
    diagnosis = run.get("diagnosis")
    if diagnosis in ("at_chance", "learning"):
        return diagnosis == "at_chance"
    best, majority = number(run, "val/acc_best"), number(run, "data/val_majority_rate")
    return best is not None and majority is not None and best <= majority + CHANCE_MARGIN


def problem(run: Any) -> str | None:
    """Why a result cannot be reported (None when it can): not a JSON object, no model or task name, or an
    accuracy outside [0, 1] (``lra_bench.train`` writes fractions; 87.5 is a percent written by something else)."""
    if not isinstance(run, dict):
        return f"not a JSON object but {type(run).__name__ if run is not None else 'null'}"
    for key in ("model", "task"):
        if not isinstance(run.get(key), str) or not run[key]:
            return f"{key!r} is {run.get(key)!r}, not a name"
    for key in ACCURACY_KEYS:
        v = run.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{key!r} is {v!r}, not a number"
        if math.isfinite(v) and not 0.0 <= v <= 1.0:
            return f"{key!r} is {v:g}, outside [0, 1] (accuracies are fractions: a percent?)"
    return None


def read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the run, None) or (None, why it is skipped)."""
    if not path.is_file():
        return None, "not a file"
    try:
        run = json.loads(path.read_text())
    except OSError as e:
        return None, f"unreadable ({e.strerror or e})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as e:
        return None, f"not valid JSON ({e}): truncated or hand-edited?"
    why = problem(run)
    return (None, why) if why else (run, None)


STAGE_ONE = "pretrain"  # result.json ``stage`` and W&B job type of stage 1 of an SPT run (lra_bench.pretraining)


def local_runs(root: Path) -> list[dict[str, Any]]:
    """Every ``result.json`` below ``root`` (set-aside attempts in ``previous-*`` folders excluded), with its run
    folder's resolved config (``configurations.stored_config``) and W&B id; a file that cannot be reported is
    skipped with one warning naming it and why. A stage-1 result (``stage: pretrain``) is folded into its run
    (``stage_one``: its folder) or, when the run has not finished, passed over with an info line."""
    runs, stage_one = [], {}
    for path in sorted(Path(root).rglob("result.json")):
        if path.parent.name.startswith("previous-"):
            continue
        run, why = read_result(path)
        if run is None:
            log.warning("skipping %s: %s", path, why)
            continue
        folder = path.parent
        if run.get("stage") == STAGE_ONE:
            stage_one[str(folder.parent)] = str(folder)
            continue
        config, config_file = stored_config(folder)
        wandb_id = folder / "wandb_id.txt"
        runs.append(run | {"source": str(folder), "config": config, "config_file": config_file,
                           "wandb_id": wandb_id.read_text().strip() if wandb_id.is_file() else None})
    for run in runs:
        if run["source"] in stage_one:
            run["stage_one"] = stage_one.pop(run["source"])
    for folder in stage_one.values():
        log.info("not a run: %s is stage 1 (self-pretraining) of a run that has not finished", folder)
    return runs


SUMMARY_KEYS = ("test/acc", "val/acc_best", "perf/tokens_per_sec", "perf/peak_memory_mb", "data/val_majority_rate",
                "global_step", "train/tokens_seen", "pretrain/steps", "pretrain/tokens_seen", "budget/total_steps",
                "budget/total_tokens")


def wandb_runs(path: str, group: str | None) -> list[dict[str, Any]]:
    """Finished runs of a W&B project (needs the network and credentials), as result.json-like dicts with their
    resolved run config; a run that cannot be reported (``problem``) is skipped with a warning naming it, stage 1
    of an SPT run (job type ``pretrain``: no accuracy, part of its run) without one."""
    import wandb

    api = wandb.Api(timeout=20)
    filters = {"state": "finished"} | ({"group": group} if group else {})
    out = []
    for r in api.runs(path, filters=filters):
        if getattr(r, "job_type", None) == STAGE_ONE:
            continue
        cfg, summ = dict(r.config), r.summary
        model, task = (cfg.get("model") or {}).get("name"), (cfg.get("task") or {}).get("name")
        if not model or not task or "test/acc" not in summ:
            continue
        run = {"model": model, "task": task, "seed": cfg.get("seed"), **{k: summ.get(k) for k in SUMMARY_KEYS},
               "experiment": summ.get("experiment"), "overrides": summ.get("overrides") or [], "sweep": r.group,
               "config": flatten(cfg), "source": "wandb:" + "/".join(map(str, r.path)),
               "wandb_id": r.id}
        flag = summ.get("diagnosis/at_chance")  # the chance diagnosis's last verdict, logged by the run
        if isinstance(flag, (int, float)):
            run["diagnosis"] = "at_chance" if flag else "learning"
        why = problem(run)
        if why:
            log.warning("skipping W&B run %s: %s", run["source"], why)
            continue
        out.append(run)
    return out


def merge(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Local runs and W&B runs, a W&B run that is also a local folder (same W&B id) counted once."""
    ids = {r["wandb_id"] for r in local if r.get("wandb_id")}
    return local + [r for r in remote if r.get("wandb_id") not in ids]


def add_filter_arguments(parser: Any) -> None:
    parser.add_argument("--sweep", default=None, help="only runs of this sweep (result.json 'sweep', the W&B group); a glob")
    parser.add_argument("--experiment", default=None, help="only runs of this experiment (e.g. 'lra/mega-*'); a glob")
    parser.add_argument("--glob", default=None, help="only run folders matching this glob, relative to --runs "
                                                     "(e.g. 'multiruns/lr-*/*')")


def select(runs: list[dict[str, Any]], root: Path, sweep: str | None = None, experiment: str | None = None,
           glob: str | None = None) -> list[dict[str, Any]]:
    """The runs that match every filter given (fnmatch globs): sweep name, experiment, run folder below ``root``."""
    def folder(r: dict[str, Any]) -> str:
        source = Path(r["source"])
        return source.relative_to(root).as_posix() if source.is_relative_to(root) else r["source"]

    return [r for r in runs
            if (sweep is None or fnmatchcase(str(r.get("sweep")), sweep))
            and (experiment is None or fnmatchcase(str(r.get("experiment")), experiment))
            and (glob is None or (not r["source"].startswith("wandb:") and fnmatchcase(folder(r), glob)))]


def bench_results(root: Path) -> list[dict[str, Any]]:
    """Every ``<root>/<task>/results.json`` that ``make bench`` wrote (``rows`` and ``meta``), with its path."""
    found = []
    for path in sorted(Path(root).glob("*/results.json")):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if "rows" in data and "meta" in data and "peak_flops" in data.get("meta", {}):
            found.append(data | {"path": str(path)})
    return found


def pick_bench(benches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The benchmark the report uses: the Text preset's (the Mega paper's speed/memory setting), else the first."""
    return next((b for b in benches if b["meta"].get("task") == "text"), benches[0] if benches else None)
