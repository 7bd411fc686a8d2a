"""The LightningModule every model and task share: loss, metrics, optimizer groups, schedule.

Metrics (logged per split): ``{train,val,test}/loss`` and ``/acc``; ``val/acc_best`` (the running
maximum, what checkpoints and sweeps select on); ``train/lr``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lra_bench.training.callbacks import count_tokens
from lra_bench.training.optim import (build_param_groups, describe_param_groups, lr_factor, resolve_warmup,
                                      warmup_longer_than_schedule)

log = logging.getLogger(__name__)


class LRAModule(pl.LightningModule):
    """Wraps a classifier ``net(tokens, lengths[, tokens2, lengths2]) -> logits``.

    optimizer: ``lr, weight_decay, betas, eps, no_decay_norm_bias_embedding``.
    scheduler: ``decay`` (linear|cosine|constant|rsqrt), ``warmup_steps`` or ``warmup_fraction``, ``total_steps``
    (null: the trainer's step count; a number: a hand-set schedule length a preset reproduces),
    ``warmup_init_lr`` (absolute lr at step 0), ``final_lr_ratio``, ``warmup_power``, ``lra_cosine``.
    """

    def __init__(self, net: nn.Module, num_classes: int, optimizer: dict[str, Any], scheduler: dict[str, Any],
                 run_config: dict[str, Any] | None = None):
        super().__init__()
        # run_config: the whole run's config, kept in every checkpoint (hyper_parameters) so that a resume can say
        # what differs from its command (lra_bench/training/resume_rules.py)
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler)
        # keyed "<split>_acc": a ModuleDict key "train" would clash with nn.Module.train
        self.metrics = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", "val", "test")}
            | {f"{s}_loss": MeanMetric() for s in ("val", "test")}
        )
        # the epoch's train accuracy so far goes into checkpoints: a run resumed mid-epoch reports the whole epoch's
        self.metrics["train_acc"].persistent(True)
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints: a resumed run knows its best so far
        self.last_loss: torch.Tensor | None = None  # read by the non-finite guard before each update
        # non-pad training tokens this process has stepped on, kept in checkpoints (a resumed run's budget counts the
        # steps before the kill too); None after resuming a checkpoint written before the count existed
        self.tokens_seen: int | None = 0

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def _step(self, batch: tuple, split: str) -> torch.Tensor:
        *inputs, labels = batch
        logits = self.net(*inputs)
        loss = F.cross_entropy(logits.float(), labels)
        self.metrics[f"{split}_acc"].update(logits.detach(), labels)
        return loss

    def on_train_epoch_start(self) -> None:
        # a run resumed from an epoch-end checkpoint restored the finished epoch's counts (the metric is persistent
        # for mid-epoch resumes, and that checkpoint is written before Lightning resets it): start the epoch empty
        self.metrics["train_acc"].reset()

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        if self.tokens_seen is not None:  # a batch without lengths (not the harness's Batch) makes the count unknown
            self.tokens_seen = self.tokens_seen + count_tokens(batch) if hasattr(batch, "lengths") else None
        self.last_loss = loss.detach()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/acc", self.metrics["train_acc"], on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lra_tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("lra_tokens_seen")

    def tokens_seen_total(self) -> int | None:
        """Training tokens of the whole run: this process's count x the processes (DDP ranks take equal batches)."""
        if self.tokens_seen is None:
            return None
        world = self.trainer.world_size if self._trainer is not None else 1
        return int(self.tokens_seen) * int(world)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: tuple, split: str) -> None:
        loss = self._step(batch, split)
        self.metrics[f"{split}_loss"].update(loss, weight=batch[-1].numel())  # weighted: the last batch may be short
        self.log(f"{split}/loss", self.metrics[f"{split}_loss"], on_step=False, on_epoch=True)
        self.log(f"{split}/acc", self.metrics[f"{split}_acc"], on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.metrics["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optimizer_cfg
        groups = build_param_groups(
            self.net, cfg["lr"], cfg.get("weight_decay", 0.0), cfg.get("no_decay_norm_bias_embedding", False)
        )
        log.info("optimizer parameter groups:\n%s", describe_param_groups(groups))
        self.param_group_summary = describe_param_groups(groups)
        for g in groups:
            g.pop("names")
        # the command's values, applied again after a resume restores the checkpoint's optimizer (on_train_start)
        self.configured_groups = [{k: g[k] for k in ("lr", "weight_decay")} for g in groups]
        optimizer = torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8))

        s = self.scheduler_cfg
        trained = int(self.trainer.estimated_stepping_batches)
        # the schedule spans the training run unless a preset reproduces a hand-set length (S4's AAN: 50,000 steps
        # over a 45,960-step run, so its lr ends near 2% of the peak)
        total = int(s["total_steps"]) if s.get("total_steps") else trained
        warmup = resolve_warmup(total, s.get("warmup_steps"), s.get("warmup_fraction"))
        start = float(s.get("warmup_init_lr", 0.0)) / cfg["lr"]
        decay, final, power = s.get("decay", "linear"), float(s.get("final_lr_ratio", 0.0)), float(s.get("warmup_power", 1.0))
        lr_factor(0, total, warmup, decay)  # validates the decay name before training starts
        span = f"{total} optimizer steps (scheduler.total_steps; the run trains {trained})" if total != trained else f"{total} optimizer steps"
        log.info("lr schedule: %s decay over %s, %d warmup steps", decay, span, warmup)
        self.warmup_steps, self.schedule_steps = warmup, total  # read by the chance diagnosis
        if warmup >= total:
            log.warning("%s", warmup_longer_than_schedule(warmup, total, start, power))
        lra_cosine = bool(s.get("lra_cosine", False))  # LRA's cosine cycle (lra_code), see optim.lr_factor
        scheduler = LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup, decay, start, final, power, lra_cosine))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    def on_train_start(self) -> None:
        """The command's optimizer settings win over a resumed checkpoint's: Lightning restores the optimizer and the
        scheduler with the lr, weight decay, betas and eps they were saved with. Each group's peak lr is set back to the
        configured one, and its lr at the resumed step to peak x the schedule's factor there (the same shape, rescaled
        to the new peak); Adam's moments stay. A no-op when nothing changed or nothing was resumed."""
        cfg = self.optimizer_cfg
        betas, eps = tuple(cfg.get("betas", (0.9, 0.999))), cfg.get("eps", 1e-8)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for i, (group, fresh) in enumerate(zip(scheduler.optimizer.param_groups, self.configured_groups)):
                group.update(initial_lr=fresh["lr"], weight_decay=fresh["weight_decay"], betas=betas, eps=eps)
                scheduler.base_lrs[i] = fresh["lr"]
                group["lr"] = fresh["lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)
            scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
