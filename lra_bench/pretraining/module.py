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
