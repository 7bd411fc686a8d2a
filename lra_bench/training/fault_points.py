"""Named points in a run's life where a test can kill the process with a real signal.

``LRA_BENCH_FAULT=<phase>[@<step>]:<SIGNAL>[:<marker file>]`` makes the run send itself ``SIGNAL`` when it reaches
``phase`` (at optimizer step ``step``, when given). With a marker file the fault fires once: the file is created
first, so the rerun of the same command goes through. Without the variable every point is a dictionary lookup.

The phases (each one line where it happens; the kill-matrix test in tests/test_resume.py lists them all):
``train_batch`` (before a training batch), ``validation`` (before a validation batch while fitting), ``epoch_end``
(after a training epoch, before its end-of-epoch checkpoints), ``checkpoint_write`` (a checkpoint's bytes written,
not yet renamed into place), ``after_fit`` (fit returned, test not started), ``test`` (before a test batch),
``result_write`` (result.json's bytes written, not yet renamed into place). A ``pretrain=spt`` run passes them in
stage 1 first (``after_fit``: before its ``encoder.pt``; ``result_write``: after it), then in stage 2.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

FAULT_ENV = "LRA_BENCH_FAULT"


def fault_point(phase: str, step: int | None = None) -> None:
    """Kill this process here if ``LRA_BENCH_FAULT`` names this phase (and step)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, signal_name, *marker = spec.split(":", 2)
    name, _, at = where.partition("@")
    if name != phase or (at and step != int(at)):
        return
    if marker:
        try:
            Path(marker[0]).touch(exist_ok=False)
        except FileExistsError:  # fired in an earlier attempt
            return
    os.kill(os.getpid(), getattr(signal, signal_name))


class FaultPoints(pl.Callback):
    """The phases inside Lightning's loops (added by ``lra_bench.train`` only while ``LRA_BENCH_FAULT`` is set)."""

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        fault_point("train_batch", trainer.global_step)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            fault_point("validation", trainer.global_step)

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        fault_point("epoch_end", trainer.global_step)

    def on_test_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        fault_point("test", trainer.global_step)
