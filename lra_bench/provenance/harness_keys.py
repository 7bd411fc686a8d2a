"""Keys a preset may set that are the harness's own choices, not an upstream hyper-parameter: no record needed.

A key is harness-only when it names or files the run, or sets how often we log, validate or checkpoint, none of which
changes what is trained. Anything that changes the trained model or its data (sizes, optimiser, schedule, steps,
batch, splits, pooling, initialisation) is not here and needs a record.
"""

from __future__ import annotations

# exact dotted keys
HARNESS_ONLY_KEYS: frozenset[str] = frozenset({
    "run_name",
    "sweep_name",
    "note",
    "optimized_metric",
    "checkpoint_every_n_steps",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "task.datamodule.num_workers",
    "task.datamodule.pin_memory",
    "task.datamodule.eval_batch_size",
})

# every key below these prefixes (where files go, what logs them, progress display, the Hydra launcher)
HARNESS_ONLY_PREFIXES: tuple[str, ...] = ("paths.", "logger.", "callbacks.", "hydra.")


def is_harness_only(key: str) -> bool:
    return key in HARNESS_ONLY_KEYS or key.startswith(HARNESS_ONLY_PREFIXES)
