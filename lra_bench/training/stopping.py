"""Why a run stopped, recorded in ``result.json`` (``stop_reason``), and whether a run cut by its time limit may
go on.

``stop_reason`` is one of ``chance_stop`` (``on_chance=stop``, lra_bench/training/diagnosis.py), ``early_stop`` (an
``EarlyStopping`` callback), ``max_time`` (Lightning's ``Timer``, from ``trainer.max_time``: the time limit fired
before the schedule ended), ``max_steps``, ``max_epochs``, ``not_trained`` (``train=false``) or ``other``. A run that
stopped on a non-finite loss (``on_nonfinite=stop``) or a signal has no result.json: it is not finished.

A run cut by ``max_time`` is finished as far as a rerun of the same command goes (it prints the result); rerun
with a longer ``trainer.max_time`` (or ``trainer.max_time=null``) and it goes on from its periodic checkpoint
(``time_cut_resume_point``; the Timer keeps the elapsed time in checkpoints, so the new limit counts the time
already spent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, Timer

from lra_bench.training.diagnosis import ChanceDiagnosis


def time_limit_s(max_time: Any) -> float | None:
    """``trainer.max_time`` (``"DD:HH:MM:SS"``, a dict of timedelta fields, or None) in seconds, as Lightning reads it."""
    if max_time is None:
        return None
    if hasattr(max_time, "items"):
        max_time = dict(max_time.items())
    return Timer(duration=max_time)._duration


def cut_by_time_limit(trainer: pl.Trainer) -> bool:
    """Whether Lightning's ``Timer`` (``trainer.max_time``) has run out: the time limit, not the schedule, ends fit."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer is not None and timer._duration is not None and (timer.time_remaining() or 0.0) <= 0.0


def stop_reason(trainer: pl.Trainer, fitted: bool) -> dict[str, Any]:
    """``stop_reason`` and, when a time limit was set, ``max_time_s``."""
    out: dict[str, Any] = {}
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer._duration is not None:
        out["max_time_s"] = timer._duration
    if not fitted:
        return out | {"stop_reason": "not_trained"}
    if any(isinstance(c, ChanceDiagnosis) and c.stopped_early for c in trainer.callbacks):
        reason = "chance_stop"
    elif any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks):
        reason = "early_stop"
    elif cut_by_time_limit(trainer):
        reason = "max_time"
    elif trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        reason = "max_steps"
    elif trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        reason = "max_epochs"
    else:
        reason = "other"
    return out | {"stop_reason": reason}


def continues_after_time_limit(result: dict[str, Any], max_time: Any) -> bool:
    """True for a run its time limit cut when this command allows it more time (a longer or no ``trainer.max_time``)."""
    if result.get("stop_reason") != "max_time":
        return False
    limit = time_limit_s(max_time)
    return limit is None or limit > float(result.get("max_time_s") or 0.0)


def time_cut_resume_point(run_dir: Path) -> Path | None:
    """The checkpoint a time-cut run goes on from: ``periodic.ckpt``, written mid-epoch at a step an uninterrupted
    run passes through too. Lightning ends the epoch when the time limit stops it (it validates and saves
    ``last``/``best`` as at an epoch end), so those checkpoints would resume at the next epoch and skip the rest of
    this one: the ones written after the periodic checkpoint are removed. None (start over) without a periodic one."""
    from lra_bench.training.run_state import checkpoint_step

    folder = Path(run_dir) / "checkpoints"
    periodic = folder / "periodic.ckpt"
    step = checkpoint_step(periodic) if periodic.is_file() else -1
    if step < 0:
        return None
    for ckpt in [folder / "last.ckpt", *folder.glob("best-*.ckpt")]:
        if ckpt.is_file() and checkpoint_step(ckpt) > step:
            ckpt.unlink()
    return periodic
