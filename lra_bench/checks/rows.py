"""Batch rows: nothing flows from one row of a batch to another.

Row 1 of a three-row batch gets new values and a new length; rows 0 and 2 must not change. Checked in eval mode
(pass/fail), after ``perturb_like_trained``. In train mode a BatchNorm's batch statistics span every row (and the
zeroed pads): that is how S4's reference trains, so for a model holding a BatchNorm the train-mode figure is
reported as information; for any other model a train-mode change fails too (a mean over the batch, a norm over
the wrong dimension). Train-mode passes reseed the generator so dropout draws the same masks.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.checks import FAIL, INFO, PASS, CheckResult, fmt
from lra_bench.checks.padding import TOLERANCE, scaled, threshold
from lra_bench.models.masks import length_mask

WIDTH = 100
LENGTHS = (100, 77, 40)
CHANGED_LENGTH = 58


CAUSES = {
    "eval": "a reduction over the batch dimension (a mean or norm over dim 0, a reshape that folds rows together), or "
            "BatchNorm running statistics updated in eval mode",
    "train": "a mean, norm or attention across the batch dimension (dim 0) in train mode; only a BatchNorm's batch "
             "statistics are expected to span rows",
}


def has_batch_statistics(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def _row_change(backbone: nn.Module, d_model: int, seed: int) -> tuple[float, torch.Tensor]:
    """Max change of rows 0 and 2 (real positions) when row 1 changes, and the reference output."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    x = torch.randn(len(LENGTHS), WIDTH, d_model, generator=gen) * length_mask(lengths, WIDTH)[..., None]
    changed_lengths = lengths.clone()
    changed_lengths[1] = CHANGED_LENGTH
    changed = x.clone()
    changed[1] = torch.randn(WIDTH, d_model, generator=gen) * (torch.arange(WIDTH) < CHANGED_LENGTH)[:, None]
    torch.manual_seed(seed)
    y = backbone(x, lengths)
    torch.manual_seed(seed)
    y_changed = backbone(changed, changed_lengths)
    others = torch.tensor([0, 2])
    real = length_mask(lengths[others], WIDTH)[..., None]
    return float(((y_changed[others] - y[others]) * real).abs().max()), y[others]


def batch_rows(backbone: nn.Module, d_model: int, seed: int = 0) -> list[CheckResult]:
    was_training = backbone.training
    try:
        backbone.eval()
        diff, ref = _row_change(backbone, d_model, seed)
        eval_ok = scaled(diff, ref) <= TOLERANCE
        results = [CheckResult("rows: batch rows are independent (eval)", PASS if eval_ok else FAIL, f"max |Δ| {fmt(diff)}",
                               "rows 0 and 2 when row 1 changes values and length" if eval_ok else
                               f"rows 0 and 2 changed by {fmt(diff)} when row 1 changed: information flows between rows",
                               threshold(ref), "" if eval_ok else CAUSES["eval"])]
        backbone.train()
        diff, ref = _row_change(backbone, d_model, seed)
        name, figure = "rows: batch rows are independent (train)", f"max |Δ| {fmt(diff)}"
        if scaled(diff, ref) <= TOLERANCE:
            results.append(CheckResult(name, PASS, figure, "train mode, same dropout draws", threshold(ref)))
        elif has_batch_statistics(backbone):
            results.append(CheckResult(name, INFO, figure, "BatchNorm: batch statistics span the rows in train mode (as S4's "
                                                           "reference); eval mode is checked above", threshold(ref)))
        else:
            results.append(CheckResult(name, FAIL, figure, f"train mode: rows 0 and 2 changed by {fmt(diff)} when row 1 changed "
                                                           "(no BatchNorm explains it)", threshold(ref), CAUSES["train"]))
        return results
    finally:
        backbone.train(was_training)
