"""Stage 1's LightningModule: the shared module's optimizer, schedule, checkpoints and guards, with the denoising
loss in place of the classification loss and no validation or test step (stage 1 sees no held-out rows)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lra_bench.pretraining.objectives import Denoiser
from lra_bench.training.module import LRAModule


class PretrainModule(LRAModule):
    """``net`` is a ``Denoiser``; ``train/loss`` is its cross-entropy, ``train/acc`` the accuracy of the scored
    positions (masked tokens, or next tokens)."""

    def __init__(self, net: Denoiser, optimizer: dict[str, Any], scheduler: dict[str, Any],
                 run_config: dict[str, Any] | None = None):
        super().__init__(net, num_classes=net.vocab, optimizer=optimizer, scheduler=scheduler, run_config=run_config)

    def _step(self, batch: tuple, split: str) -> torch.Tensor:
        if split != "train":
            raise RuntimeError("self-pretraining has no validation or test step: stage 1 reads the training inputs only")
        logits, targets = self.net(*batch)
        loss = F.cross_entropy(logits.float(), targets)
        self.metrics["train_acc"].update(logits.detach(), targets)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # stage 1's result reports the last step's loss: a rerun that resumes the final checkpoint (killed after
        # fitting, before result.json) has no step left to log it
        checkpoint["lra_pretrain_last_loss"] = None if self.last_loss is None else float(self.last_loss)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        loss = checkpoint.get("lra_pretrain_last_loss")
        self.last_loss = None if loss is None else torch.tensor(loss)

    def final_loss(self) -> float:
        """The last training step's loss (NaN before any step)."""
        return float("nan") if self.last_loss is None else float(self.last_loss)
