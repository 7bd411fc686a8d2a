"""Callbacks that keep a run recoverable: preemption, non-finite losses, and exact resume state.

- ``Preemption``: SIGTERM, SIGINT or SIGUSR2 (SLURM's warning before its time limit) lets the current batch finish
  (and its metrics be logged), saves ``checkpoints/preempted.ckpt`` before the next batch and stops at once,
  without the epoch-end validation and
  checkpoints an ordinary stop would add; ``lra_bench.train`` then exits with 128 + the signal number.
  Rerunning the same command resumes (see ``lra_bench.training.run_state``).
- ``NonFiniteGuard``: checked before every optimizer step, so bad gradients never reach the weights.
  ``stop`` (default) ends the run with a message naming the step and the last good checkpoint;
  ``skip`` drops the update, counts it and logs ``train/nonfinite_skipped``.
- ``ResumeState``: saves the RNG states and the number of training batches consumed, so a resumed run
  continues with the same dropout draws and the same remaining batches as an uninterrupted one, in any epoch;
  it also flushes the loggers at every checkpoint, so the CSV rows a checkpoint covers are on disk.
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from lra_bench.errors import LRAError
from lra_bench.training.run_state import resume_checkpoint

log = logging.getLogger(__name__)


class NonFiniteError(LRAError):
    """A NaN or inf loss or gradient stopped the run."""


class Preempted(Exception):
    """Raised inside the training loop after the preemption checkpoint is saved: the loop stops at once."""

    def __init__(self, signum: int):
        super().__init__(f"preempted by {signal.Signals(signum).name}")
        self.signum = signum


class Preemption(pl.Callback):
    def __init__(self, dirpath: str, signals: tuple[str, ...] = ("SIGTERM", "SIGINT", "SIGUSR2")):
        self.dirpath = Path(dirpath)
        self.signals = [getattr(signal, s) for s in signals]
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("received %s: saving a checkpoint after this batch and stopping", signal.Signals(signum).name)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for s in self.signals:  # installed after Lightning's own handlers, so these win
            self._previous[s] = signal.signal(s, self._handle)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # Before the next batch, not after the last one: by now the last batch's metrics are logged, so the
        # checkpoint covers them (an uninterrupted run would log nothing else for that step).
        if self.received is not None:
            for logger in trainer.loggers:
                logger.save()
            path = self.dirpath / "preempted.ckpt"
            trainer.save_checkpoint(path)
            log.warning("saved %s at step %d; rerun the same command to resume", path, trainer.global_step)
            raise Preempted(self.received)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class NonFiniteGuard(pl.Callback):
    def __init__(self, dirpath: str, action: str = "stop"):
        if action not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be stop or skip, got {action!r}")
        self.dirpath = Path(dirpath)
        self.action = action
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        loss = getattr(pl_module, "last_loss", None)
        bad_loss = loss is not None and not bool(torch.isfinite(loss))
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        # one device sync per step, not one per parameter
        bad_grad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if not (bad_loss or bad_grad):
            return
        what = "loss" if bad_loss else "gradient"
        step = trainer.global_step
        if self.action == "skip":
            for p in pl_module.parameters():
                p.grad = None  # AdamW leaves parameters without a gradient untouched
            self.skipped += 1
            pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)
            log.warning("non-finite %s at step %d: update skipped (%d so far)", what, step, self.skipped)
            return
        # The weights of step `step` gave it: a checkpoint saved at that step holds them, one saved before does not.
        good = resume_checkpoint(self.dirpath.parent, before_step=step)
        lr = getattr(pl_module, "optimizer_cfg", {}).get("lr")
        lower = f"optimizer.lr=<lower than {lr:g}>" if lr else "optimizer.lr=<lower>"
        hint = (f"the last good checkpoint (saved before step {step}) is {good[0]}: resume from it with a lower lr, "
                f"ckpt_path={good[0]} {lower}" if good else
                f"no checkpoint was saved before step {step}: start over with a lower lr, {lower}")
        raise NonFiniteError(
            f"non-finite {what} at step {step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx}); "
            f"{hint}. Or check the data, or set on_nonfinite=skip to drop such updates"
        )


def capture_rng() -> dict[str, Any]:
    """RNG states as tensors and primitives only, so checkpoints still load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mark_saved_between_batches(checkpoint: dict[str, Any]) -> None:
    """A checkpoint written at the start of a batch (preemption, the periodic checkpoint) records that batch as
    fetched but not started. Lightning reads such a state as a mid-batch restart and, on resuming, shifts its batch
    counter by one: validation every N steps then ran one step early. Recorded as "nothing fetched after the last
    completed batch", it restores as a checkpoint written after the step's validation (Lightning's last.ckpt):
    the next batch is the first one run, and the step's validation, already done, is not repeated."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
    if not progress:
        return
    for counts in (progress["total"], progress["current"]):
        if counts["ready"] == counts["completed"] + 1 and counts["started"] == counts["completed"]:
            counts["ready"] = counts["completed"]


class ResumeState(pl.Callback):
    """Keeps RNG states and the consumed-batch count in every checkpoint, and restores them.

    ``consumed`` counts the training batches this rank has taken, across epochs; the train sampler
    (``lra_bench.data.base.ResumableRandomSampler``) positions every new iterator by it, so the batches after a
    resume are those of the uninterrupted run whatever the epoch, the workers or Lightning's epoch bookkeeping.
    """

    def __init__(self) -> None:
        self.consumed = 0
        self._flush_pending = False

    @staticmethod
    def _sampler(trainer: pl.Trainer):
        return getattr(getattr(trainer, "datamodule", None), "train_sampler", None)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        sampler = self._sampler(trainer)
        if sampler is not None:
            limit = trainer.limit_train_batches
            sampler.limit_batches = None if limit in (None, 1.0) else limit
            sampler.consumed = self.consumed

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.consumed += 1
        sampler = self._sampler(trainer)
        if sampler is not None:
            sampler.consumed = self.consumed

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["lra_resume"] = {"consumed": self.consumed, "rng": capture_rng()}
        mark_saved_between_batches(checkpoint)
        for logger in trainer.loggers:  # rows up to this checkpoint reach the disk with it
            logger.save()
        self._flush_pending = True  # and the checkpointed step's own rows, logged after it, at the next batch

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # The step loggers use: optimizer steps taken so far, as in an uninterrupted run. Lightning restores it from
        # the checkpoint and adds one when it assumes the save came before its increment (true on_train_batch_end,
        # not for our preemption checkpoint or an epoch-end last.ckpt), so a resumed run logged one step ahead.
        # This callback runs first (conf/callbacks/default.yaml), before LearningRateMonitor logs the lr.
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
        if self._flush_pending:
            for logger in trainer.loggers:
                logger.save()
            self._flush_pending = False

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lra_resume")
        if not state:
            return
        restore_rng(state["rng"])
        self.consumed = int(state.get("consumed", 0))
        sampler = self._sampler(trainer)
        if sampler is not None:
            sampler.consumed = self.consumed
