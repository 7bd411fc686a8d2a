"""Where the report's numbers come from: finished runs (``result.json`` files, W&B) and ``make bench`` outputs.

A run is a dict with at least ``model``, ``task``, ``seed`` and ``test/acc`` (test accuracy of the
best-validation checkpoint, a fraction), as ``lra_bench.train`` writes it, plus ``source`` (its folder or W&B
path). ``scale_of`` tells paper-preset runs from reduced ones; ``at_chance`` reads the run's chance diagnosis
(``lra_bench.training.diagnosis``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("lra_bench.reporting.runs")

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image", "pathfinder": "Pathfinder", "pathx": "Path-X"}
# overrides that change nothing about what is trained: a run with only these is still "paper preset"
NEUTRAL_OVERRIDES = ("seed=", "paths.", "logger", "trainer.accelerator=", "trainer.devices=", "trainer.precision=",
                     "trainer=", "hydra", "rerun=", "sweep_name=", "+sweep=", "task.datamodule.num_workers=",
                     "on_chance=", "chance.", "lra_code=")  # lra_code runs are marked "[LRA code]" instead
# a run without a diagnosis (older result.json) counts as at chance when its best validation accuracy is within
# this much of the validation split's majority-class rate
CHANCE_MARGIN = 0.01


def scale_of(run: dict[str, Any]) -> str:
    """'paper preset' for ``experiment=lra/<model>-<task>`` with only neutral overrides, else 'reduced'."""
    experiment = run.get("experiment") or ""
    if experiment != f"lra/{run['model']}-{run['task']}":
        return "reduced"
    extra = [o for o in run.get("overrides") or [] if not o.startswith(("experiment=", *NEUTRAL_OVERRIDES))]
    return "reduced" if extra else "paper preset"


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


def local_runs(root: Path) -> list[dict[str, Any]]:
    """Every ``result.json`` below ``root`` (set-aside attempts in ``previous-*`` folders excluded)."""
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


SUMMARY_KEYS = ("test/acc", "val/acc_best", "perf/tokens_per_sec", "perf/peak_memory_mb", "data/val_majority_rate")


def wandb_runs(path: str, group: str | None) -> list[dict[str, Any]]:
    """Finished runs of a W&B project (needs the network and credentials), as result.json-like dicts."""
    import wandb

    api = wandb.Api(timeout=20)
    filters = {"state": "finished"} | ({"group": group} if group else {})
    out = []
    for r in api.runs(path, filters=filters):
        cfg, summ = r.config, r.summary
        model, task = (cfg.get("model") or {}).get("name"), (cfg.get("task") or {}).get("name")
        if not model or not task or "test/acc" not in summ:
            continue
        run = {"model": model, "task": task, "seed": cfg.get("seed"), **{k: summ.get(k) for k in SUMMARY_KEYS},
               "experiment": summ.get("experiment"), "overrides": summ.get("overrides") or [], "source": f"wandb:{r.path}"}
        flag = summ.get("diagnosis/at_chance")  # the chance diagnosis's last verdict, logged by the run
        if isinstance(flag, (int, float)):
            run["diagnosis"] = "at_chance" if flag else "learning"
        out.append(run)
    return out


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
