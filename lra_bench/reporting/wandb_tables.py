"""``make bench`` results in W&B: a table, and speed/memory-against-length line charts the dashboard reads.

``log_bench_tables(run, rows)`` logs, into an open W&B run (the bench run, job_type ``bench``):

- ``bench/speed_memory``: a W&B table, one row per (model, length) as in ``bench_results/<task>/results.json``
  (``model, length, tokens_per_s, memory_mb, speed_vs_transformer, memory_vs_transformer, train_s, skipped``);
- one history row per length, stepped by ``bench/length`` (``define_metric``), with ``bench/<quantity>/<model>``
  for every measured cell: W&B draws each model as a line against length (skipped cells leave a gap).

``series_key`` names those series; ``lra_bench.dashboard`` builds its bench panels from the same names.
"""

from __future__ import annotations

from typing import Any

STEP = "bench/length"
TABLE = "bench/speed_memory"
# what each line chart shows: row key in results.json -> axis title
QUANTITIES = {"tokens_per_s": "training tokens/s", "memory_mb": "training-step memory (MB)",
              "speed_vs_transformer": "speed x (SDPA Transformer)", "memory_vs_transformer": "memory x (SDPA Transformer)"}
COLUMNS = ("model", "length", "tokens_per_s", "memory_mb", "speed_vs_transformer", "memory_vs_transformer", "train_s", "skipped")


def series_key(quantity: str, model: str) -> str:
    return f"bench/{quantity}/{model}"


def log_bench_tables(run: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Log the table and the per-length series of ``rows`` into ``run``; return the keys logged."""
    import wandb

    run.define_metric(STEP)
    for quantity in QUANTITIES:
        run.define_metric(f"bench/{quantity}/*", step_metric=STEP)
    table = wandb.Table(columns=list(COLUMNS), data=[[r.get(c) for c in COLUMNS] for r in rows])
    run.log({TABLE: table})
    keys = {TABLE, STEP}
    for length in sorted({r["length"] for r in rows}):
        values = {series_key(q, r["model"]): float(r[q]) for r in rows if r["length"] == length and "skipped" not in r
                  for q in QUANTITIES if isinstance(r.get(q), (int, float))}
        if values:
            run.log({STEP: length, **values})
            keys |= set(values)
    return sorted(keys)
