"""Hydra multirun support: one name for all jobs of a command, and the end-of-sweep summary of which cells
finished, failed or were skipped (printed, and written to ``sweep_summary.json`` in the sweep folder).

The default sweep name (``sweep_name``: the sweep folder and the W&B group) is the command's overrides, minus the
keys that never change a result (conf/hydra/default.yaml's ``exclude_keys``), sorted: ``seed=1,2,3`` names one sweep,
and the same command rerun finds it again. It is computed once, at the start of the multirun, from the command, not
in each job (whose overrides are its own cell's).

Each job records ``result.json`` (finished) or ``error.json`` (failed) in its folder
(lra_bench/training/run_state.py); a failing job does not stop the others (lra_bench.train catches it inside a
multirun), and rerunning the same sweep skips the finished cells and reruns the failed or missing ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lra_bench.training.checkpoint_io import atomic_write
from lra_bench.training.run_lock import RunLock

log = logging.getLogger("lra_bench.training.sweep")


def default_sweep_name(overrides: list[str], exclude_keys: list[str]) -> str:
    """The command's overrides as a folder name, without the excluded keys (paths, W&B placement, max_time...)."""
    from lra_bench.training.run_state import slug

    kept = sorted(o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in set(exclude_keys))
    return slug(",".join(kept))


def _overrides(folder: Path) -> list[str]:
    import yaml

    try:
        return list(yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, ValueError):
        return []


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder: the overrides that set it apart from the other jobs, its status, accuracy or error."""
    folders = sorted(p for p in Path(sweep_dir).iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    overrides = {f: _overrides(f) for f in folders}
    shared = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()
    rows = []
    for folder in folders:
        label = ",".join(o for o in overrides[folder] if o not in shared) or folder.name
        row: dict[str, Any] = {"job": label, "folder": str(folder)}
        if (folder / "result.json").is_file():
            result = json.loads((folder / "result.json").read_text())
            row |= {"status": "finished", "val/acc_best": result.get("val/acc_best"), "test/acc": result.get("test/acc"),
                    "stop_reason": result.get("stop_reason"), "skipped": (folder / "skipped.txt").is_file()}
        elif (holder := RunLock(folder).held_elsewhere()) is not None:  # the same job, started by another command
            row |= {"status": "running", "error": f"being written by pid {holder.get('pid')}"}
        elif (folder / "error.json").is_file():
            row |= {"status": "failed", "error": json.loads((folder / "error.json").read_text()).get("error", "?")}
        else:
            row |= {"status": "incomplete"}
        rows.append(row)
    return rows


class SweepSummary(Callback):
    """Names the sweep once at its start; at its end prints the table, writes ``sweep_summary.json`` and exits
    non-zero when any cell failed (a cell another command is running, the same sweep started twice, is listed as
    running, not failed)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Every job's config is composed again from its own overrides, but with the multirun config's resolver cache
        # (Hydra's load_sweep_config): the name put there now, from the whole command, is the one every job resolves.
        hydra_cfg = config.hydra
        name = default_sweep_name(list(hydra_cfg.overrides.task), list(hydra_cfg.job.config.override_dirname.exclude_keys))
        OmegaConf.get_cache(config).setdefault("lra_sweep_name", {})[()] = name

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir) if sweep_dir.is_dir() else []
        failed = [r for r in rows if r["status"] not in ("finished", "running")]
        print_table(sweep_dir.name, rows)
        if sweep_dir.is_dir():
            summary = {"sweep": sweep_dir.name, "folder": str(sweep_dir), "cells": len(rows),
                       "finished": sum(r["status"] == "finished" for r in rows), "failed": [r["job"] for r in failed],
                       "jobs": rows}
            text = json.dumps(summary, indent=2, default=str).encode()
            atomic_write(sweep_dir / "sweep_summary.json", lambda f: f.write(text))
        if failed:
            log.error("%d of %d cells did not finish: %s; rerun the same command to retry only those", len(failed),
                      len(rows), "; ".join(f"{r['job']} ({r['status']}: {r.get('error') or 'no result.json'}"[:300] + ")" for r in failed))
            raise SystemExit(1)


def print_table(name: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {name}: {len(rows)} cells")
    for column in ("job", "status", "val acc", "test acc / error"):
        table.add_column(column)
    for r in rows:
        if r["status"] == "finished":
            note = f"{100 * r['test/acc']:.2f}%" if isinstance(r.get("test/acc"), float) else "-"
            acc = f"{100 * r['val/acc_best']:.2f}%" if isinstance(r.get("val/acc_best"), float) else "-"
            cut = " (cut by trainer.max_time)" if r.get("stop_reason") == "max_time" else ""
            table.add_row(r["job"], "finished" + (" (earlier)" if r["skipped"] else "") + cut, acc, note)
        else:
            table.add_row(r["job"], r["status"], "-", r.get("error", "")[:100])
    Console().print(table)
