"""The table printed at the end of every run: accuracy, speed, memory, size, wall time and why it stopped (a line
says so plainly when the time limit, not the schedule, ended it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "mb":
        return f"{value:,.0f} MiB"
    if kind == "s":
        return f"{value:.1f} s" if value >= 1 else f"{1000 * value:.1f} ms"
    return f"{value:,.0f}"


ROWS = (
    ("task", "task", "str"),
    ("model", "model", "str"),
    ("best val accuracy", "val/acc_best", "pct"),
    ("test accuracy", "test/acc", "pct"),  # labelled by what was tested: tested_weights()
    ("val majority-class rate", "data/val_majority_rate", "pct"),
    ("train tokens/s", "perf/tokens_per_sec", "num"),
    ("train samples/s", "perf/samples_per_sec", "num"),
    ("median step time", "perf/step_time", "s"),
    ("peak memory", "perf/peak_memory_mb", "mb"),
    ("parameters (non-embedding)", "model/params_non_embedding", "int"),
    ("optimizer steps", "global_step", "int"),
    ("stopped by", "stop_reason", "str"),
    ("wall time", "wall_time_s", "s"),
)


def tested_weights(result: dict[str, Any]) -> str:
    """What the test accuracy was measured on: the best-validation checkpoint, or the final weights when no
    validation ran (no best checkpoint; the run's log says so too)."""
    return "best ckpt" if result.get("best_checkpoint", "best") else "final weights"


def print_summary(result: dict[str, Any], out_dir: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lra_bench run summary", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for label, key, kind in ROWS:
        if key in result:
            value = result[key]
            label = f"{label} ({tested_weights(result)})" if key == "test/acc" else label
            table.add_row(label, str(value) if kind == "str" else _fmt(value, kind))
    console = Console()
    console.print(table)
    if result.get("stop_reason") == "max_time":
        console.print(time_limit_note(result))
    if out_dir is not None:
        console.print(f"run folder: {out_dir}  ({', '.join(folder_contents(out_dir))})")


RUN_FILES = ("result.json", "checkpoints/", "csv/metrics.csv", "wandb/")


def folder_contents(out_dir: Path) -> list[str]:
    """The run folder's outputs that exist: a run with logger=csv has no wandb/, logger=none no csv/metrics.csv."""
    return [name for name in RUN_FILES if (out_dir / name.rstrip("/")).exists()]


def time_limit_note(result: dict[str, Any]) -> str:
    """Said plainly under the table: the time limit, not the schedule, ended the run, and how to go on."""
    return (f"the time limit fired: trainer.max_time ({_fmt(result.get('max_time_s'), 's')}) stopped the run after "
            f"{result.get('global_step', 0):,} optimizer steps, before its schedule ended: this result is of a shortened run. Rerun the "
            "same command with a longer trainer.max_time (or trainer.max_time=null) to continue it from its periodic checkpoint")
