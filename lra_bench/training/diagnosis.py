"""Did it learn? A callback that tells a run stuck at chance from one that learns.

Chance is the majority-class rate p0 of the validation rows actually validated (what always answering the most
common label scores on them): counted from the labels of the validation batches, so ``trainer.limit_val_batches``
(part of the split) gives the band of the rows it validated; before the first validation, the data cache's label
counts of the whole split (else 1/K for K classes). With n validated samples, the accuracy of a model at chance
varies by its binomial standard error, so the run is "within noise of chance" while its best validation accuracy
so far stays at or below

    threshold = p0 + z * sqrt(p0 (1 - p0) / n)        (z = 3 by default: the check takes the best of several
                                                       evaluations, and the max of noisy draws of a stuck run
                                                       would cross a narrower band too often)

The check starts once ``fraction`` of the optimizer steps of the schedule (``trainer.estimated_stepping_batches``)
have run, and repeats after every later validation. Every check logs ``diagnosis/at_chance`` (0 or 1) and
``diagnosis/margin`` (best val acc - threshold) to every logger. The first time the run is at chance it says so
once: a warning in the log naming the usual fixes, and a W&B alert when the W&B run is online. ``on_chance="stop"``
also ends the run at that point (the best checkpoint is then tested as usual), to save the budget.

``result()`` is what the run's ``result.json`` records: ``diagnosis`` = ``at_chance`` (still within noise at the
last check), ``learning`` (above the band) or ``not_checked`` (the run ended before ``fraction`` of its
schedule, or has no step or epoch limit to take a fraction of), with the numbers behind it. The state is kept in
checkpoints, so a resumed run warns only once; testing the best checkpoint leaves it as the fit ended.

Cost: one comparison per validation; nothing per step. This is the harness's own check (no upstream reference):
the complaint it answers is LRA runs (Pathfinder, Path-X) that sit at 50% unnoticed.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

log = logging.getLogger(__name__)

ON_CHANCE = ("warn", "stop")
FIXES = ("a lower learning rate (optimizer.lr)", "a longer warmup (scheduler.warmup_fraction or scheduler.warmup_steps)",
         "another seed (seed=...)")
# a run whose schedule ends inside its warmup never trained at its lr: a longer warmup would make that worse
SHORT_SCHEDULE_FIXES = ("a schedule longer than its warmup (scheduler.warmup_steps or warmup_fraction below the "
                        "optimizer steps, or more steps)", "another seed (seed=...)")


def fixes_for(pl_module: Any) -> tuple[str, ...]:
    """The usual fixes; never "a longer warmup" for a schedule that ends inside its warmup (LRAModule records both)."""
    short = getattr(pl_module, "warmup_steps", 0) >= getattr(pl_module, "schedule_steps", math.inf)
    return SHORT_SCHEDULE_FIXES if short else FIXES


def chance_rate(datamodule: Any, num_classes: int | None) -> tuple[float, int | None, str]:
    """(p0, n, where p0 came from): the validation split's majority-class rate from the data cache's label
    counts (as ``lra_bench.train`` reports ``data/val_majority_rate``), else 1/K with the split's size if known."""
    try:
        counts = datamodule.cache.meta()["stats"]["val"]["label_counts"]
        if counts and sum(counts) > 0:
            return max(counts) / sum(counts), int(sum(counts)), "majority-class rate of the validation split"
    except (AttributeError, KeyError, OSError, ValueError, TypeError):
        pass
    n = None
    try:
        n = len(datamodule.datasets["val"])
    except (AttributeError, KeyError, TypeError):
        pass
    k = int(num_classes or 2)
    return 1.0 / k, n, f"1/{k} (no label counts for the validation split)"


def noise_threshold(p0: float, n: int | None, z: float) -> float:
    """p0 + z binomial standard errors of an accuracy measured on n samples (no band when n is unknown)."""
    if not n:
        return p0
    return p0 + z * math.sqrt(p0 * (1.0 - p0) / n)


class ChanceDiagnosis(pl.Callback):
    """Compares the best validation accuracy with chance after ``fraction`` of the schedule; see the module
    docstring. ``on_chance``: ``warn`` (default) or ``stop``."""

    def __init__(self, fraction: float = 0.25, z: float = 3.0, on_chance: str = "warn", monitor: str = "val/acc"):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"chance.fraction must be in (0, 1], got {fraction}")
        if on_chance not in ON_CHANCE:
            raise ValueError(f"on_chance must be one of {ON_CHANCE}, got {on_chance!r}")
        self.fraction, self.z, self.on_chance, self.monitor = fraction, z, on_chance, monitor
        self.best = -math.inf  # best validation accuracy seen so far
        self.verdict = "not_checked"
        self.checked_at_step: int | None = None  # the last check
        self.flagged_at_step: int | None = None  # the first check that found the run at chance (warned then)
        self.stopped_early = False
        self.p0: float | None = None
        self.n: int | None = None
        self.threshold: float | None = None
        self.source = ""
        self._label_counts: Any = None  # per class, over this validation's batches (a tensor on the model's device)
        self._split_rows: int | None = None  # the whole validation split, to say when fewer rows were validated

    # --- the check ------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_classes = getattr(pl_module, "hparams", {}).get("num_classes")
        self.p0, self.n, self.source = chance_rate(trainer.datamodule, num_classes)
        self._split_rows = self.n
        self.threshold = noise_threshold(self.p0, self.n, self.z)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._label_counts = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        import torch

        labels = batch.labels if hasattr(batch, "labels") else batch[-1]
        counts = torch.bincount(labels.long().flatten())  # on the device: no sync per batch
        if self._label_counts is not None:
            size = max(len(counts), len(self._label_counts))
            counts = torch.nn.functional.pad(counts, (0, size - len(counts)))
            counts += torch.nn.functional.pad(self._label_counts, (0, size - len(self._label_counts)))
        self._label_counts = counts

    def _use_validated_rows(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """p0 and n of the rows this validation ran on (all ranks' together), the band computed from them."""
        import torch

        num_classes = int(getattr(pl_module, "hparams", {}).get("num_classes") or 0)
        local = self._label_counts
        size = max(num_classes, len(local))
        counts = torch.nn.functional.pad(local, (0, size - len(local))).float()
        counts = trainer.strategy.reduce(counts, reduce_op="sum").tolist()  # one sync per validation
        n = int(round(sum(counts)))
        if n <= 0:
            return
        whole = self._split_rows
        self.p0, self.n = max(counts) / n, n
        self.threshold = noise_threshold(self.p0, self.n, self.z)
        part = f" of {whole}, trainer.limit_val_batches" if whole and whole != n else ""
        self.source = f"majority-class rate of the {n} validated rows{part}"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the epoch's metrics are computed and logged (callback_metrics holds this validation's accuracy)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or self.monitor not in trainer.callback_metrics:
            return
        if self._label_counts is not None:
            self._use_validated_rows(trainer, pl_module)
            self._label_counts = None
        self.best = max(self.best, float(trainer.callback_metrics[self.monitor]))
        estimated = trainer.estimated_stepping_batches
        if not math.isfinite(estimated):  # no step or epoch limit (max_time only): no fraction to wait for
            return
        total = max(int(estimated), 1)
        if trainer.global_step < self.fraction * total:
            return
        assert self.threshold is not None and self.p0 is not None
        self.checked_at_step = trainer.global_step
        at_chance = self.best <= self.threshold
        self.verdict = "at_chance" if at_chance else "learning"
        if trainer.is_global_zero:  # every check, so dashboards show each run's latest verdict
            # at the step this validation's own metrics carry (Lightning's logging step, one behind global_step at an
            # epoch end), so a resume drops and rewrites exactly the rows an uninterrupted run has
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics({"diagnosis/at_chance": float(at_chance), "diagnosis/margin": self.best - self.threshold},
                                   step=step)
        if not at_chance or self.flagged_at_step is not None:
            return
        self.flagged_at_step = trainer.global_step
        stop = self.on_chance == "stop"
        message = self.message(trainer.global_step, total, stop, fixes_for(pl_module))
        if trainer.is_global_zero:
            log.warning("%s", message)
            send_wandb_alert(trainer, "lra_bench: run at chance", message)
        if stop:  # every rank decides alike (validation metrics are synced), so all stop together
            trainer.should_stop = True
            self.stopped_early = True

    def message(self, step: int, total: int, stop: bool, fixes: tuple[str, ...] = FIXES) -> str:
        assert self.p0 is not None and self.threshold is not None
        band = f"{self.p0:.2%} + {self.z:g} standard errors over {self.n} samples = {self.threshold:.2%}" if self.n else f"{self.p0:.2%}"
        then = ("Stopping now (on_chance=stop)." if stop else
                "Training goes on (on_chance=stop would end such a run here).")
        return (f"did it learn? No: after {step} of {total} optimizer steps ({step / total:.0%} of the schedule) the best "
                f"validation accuracy, {self.best:.2%}, is within noise of chance ({self.source}: {band}). "
                f"Usual fixes: {'; '.join(fixes)}. {then}")

    # --- what result.json records ---------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """``diagnosis`` (at_chance | learning | not_checked) and the numbers behind it, for result.json."""
        out: dict[str, Any] = {"diagnosis": self.verdict}
        if self.p0 is not None:
            out |= {"diagnosis/chance_rate": self.p0, "diagnosis/threshold": self.threshold, "diagnosis/val_samples": self.n}
        if self.best > -math.inf:
            out["diagnosis/val_acc_best"] = self.best
        if self.checked_at_step is not None:
            out["diagnosis/checked_at_step"] = self.checked_at_step
            out["diagnosis/at_chance"] = int(self.verdict == "at_chance")
        if self.flagged_at_step is not None:
            out["diagnosis/flagged_at_step"] = self.flagged_at_step
        out["diagnosis/stopped_early"] = int(self.stopped_early)
        return out

    # --- resume: a resumed run keeps its verdict and never warns twice -------------------------------------
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["lra_chance_diagnosis"] = {"best": self.best, "verdict": self.verdict, "checked_at_step": self.checked_at_step,
                                              "flagged_at_step": self.flagged_at_step, "stopped_early": self.stopped_early}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Only when fitting resumes: testing the best checkpoint afterwards must not roll the verdict back to that
        # checkpoint's (Lightning restores callback state for test(ckpt_path=...) too).
        state = checkpoint.get("lra_chance_diagnosis")
        if state is None or trainer.state.fn != TrainerFn.FITTING:
            return
        self.best = float(state["best"])
        self.verdict = state["verdict"]
        self.checked_at_step = state["checked_at_step"]
        self.flagged_at_step = state["flagged_at_step"]
        self.stopped_early = bool(state["stopped_early"])


def send_wandb_alert(trainer: pl.Trainer, title: str, text: str) -> list[str]:
    """A W&B alert (email / Slack, per the user's W&B settings) from every online W&B run of the trainer;
    offline runs get none (an alert is only worth something while the run goes on). Never raises."""
    sent = []
    for logger in trainer.loggers:
        if not type(logger).__name__.endswith("WandbLogger") or getattr(logger, "broken", None):
            continue
        try:
            run = logger.experiment
            if getattr(run, "offline", True) or not hasattr(run, "alert"):
                continue
            run.alert(title=title, text=text, level="WARN")
            sent.append(getattr(run, "id", "?"))
        except Exception as e:  # W&B trouble never stops training
            log.warning("W&B alert failed: %s", e)
    return sent
