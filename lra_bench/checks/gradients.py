"""Gradients: every trainable parameter receives a finite, non-zero gradient from one training step's loss.

One train-mode step of the classifier (cross-entropy on random labels, a batch of varied lengths). A parameter with
no gradient (``None``: never used in the forward pass), an all-zero one (used only where its effect is cut, e.g.
behind a mask or a detach) or a non-finite one fails, by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.checks import FAIL, PASS, CheckResult

LENGTHS = (128, 97, 60, 9)  # several blocks of a blocked model: a sort net over one block gets no gradient


def gradients(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], num_classes: int, pair: bool,
              seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    net.train()
    net.zero_grad(set_to_none=True)
    lengths = torch.tensor(LENGTHS)
    args = [make_inputs(list(LENGTHS), max(LENGTHS), "zero"), lengths]
    if pair:
        args += [make_inputs(list(LENGTHS[::-1]), max(LENGTHS), "zero"), lengths.flip(0)]
    labels = torch.randint(0, num_classes, (len(LENGTHS),))
    F.cross_entropy(net(*args).float(), labels).backward()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    missing = [n for n, p in named if p.grad is None]
    zero = [n for n, p in named if p.grad is not None and not bool(p.grad.ne(0).any())]
    nonfinite = [n for n, p in named if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    net.zero_grad(set_to_none=True)
    bad = len(missing) + len(zero) + len(nonfinite)
    figure = f"{len(named) - bad}/{len(named)} tensors"
    if not bad:
        return CheckResult("gradients: every parameter, finite and non-zero", PASS, figure, "one training step on random labels",
                           "all tensors")
    parts = [f"{kind}: {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
             for kind, names in (("no gradient (unused)", missing), ("zero gradient", zero), ("non-finite gradient", nonfinite)) if names]
    causes = [cause for names, cause in ((missing, "a layer built but never called in forward"),
                                         (zero, "its output cut by a mask, a detach or a zero-initialised gate"),
                                         (nonfinite, "a log, division or sqrt of zero, or an overflow")) if names]
    return CheckResult("gradients: every parameter, finite and non-zero", FAIL, figure, "; ".join(parts), "all tensors",
                       "; ".join(causes))
