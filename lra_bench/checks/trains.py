"""It trains: the loss falls on a tiny synthetic task within a few hundred steps.

The task (two classes, right-padded rows of varied lengths): token input, ids in [3, vocab) with marker ids 1 and
2 placed at random positions, three of one and one of the other; the class is the majority marker. Pixel input,
values in [0, 255]; class 1 brightens a random span of a quarter of the row. Both are easy (a bag of tokens / a
mean decides them): the check finds models that do not learn at all (a broken gradient path, a frozen or
diverging parameter group, an lr hook gone wrong), not weak ones.

Training: AdamW at ``LR`` on the model's own parameter groups (``_optim`` hooks honoured,
lra_bench/training/optim.py), gradient clipping 1.0, batch ``BATCH``. The figure is the loss on a fixed held-out
batch (eval mode) before and after; it passes when it fell below ``FACTOR`` times the start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from lra_bench.checks import FAIL, PASS, CheckResult, fmt
from lra_bench.models.masks import length_mask

STEPS, QUICK_STEPS = 300, 60
BATCH, HELD_OUT = 16, 64
MIN_LENGTH, MAX_LENGTH = 12, 32
LR = 2e-3
FACTOR = 0.75
CAUSES = ("a broken gradient path (see the gradients row), a parameter group with lr 0 or a frozen one (_optim hooks), "
          "an output scale that saturates (a missing norm), or a loss that diverges (an lr hook too high)")


def synthetic_batch(cfg: DictConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (n, MAX_LENGTH) long, lengths (n,), labels (n,)) of the synthetic task for the task's input kind."""
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (n,), generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    real = length_mask(lengths, MAX_LENGTH)
    if cfg.task.input == "tokens":
        x = torch.randint(3, int(cfg.task.vocab_size), (n, MAX_LENGTH), generator=gen)
        for i in range(n):  # four marker slots per row: 3 of the label's marker, 1 of the other
            slots = torch.randperm(int(lengths[i]), generator=gen)[:4]
            majority, minority = (2, 1) if labels[i] else (1, 2)
            x[i, slots[:3]], x[i, slots[3]] = majority, minority
    else:
        x = torch.randint(0, 200, (n, MAX_LENGTH), generator=gen)
        for i in range(n):
            if labels[i]:
                span = int(lengths[i]) // 4
                start = int(torch.randint(0, int(lengths[i]) - span + 1, (1,), generator=gen))
                x[i, start:start + span] = torch.clamp(x[i, start:start + span] + 56, max=255)
    return x * real, lengths, labels


def _loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], pair: bool) -> torch.Tensor:
    x, lengths, labels = batch
    logits = net(x, lengths, x, lengths) if pair else net(x, lengths)  # a pair: the document with itself
    return F.cross_entropy(logits.float(), labels)


def trains(net: nn.Module, cfg: DictConfig, quick: bool, seed: int = 0) -> CheckResult:
    """``net`` is built with two classes (``task.num_classes=2``)."""
    from lra_bench.training.optim import build_param_groups

    gen = torch.Generator().manual_seed(seed)
    pair = bool(cfg.task.pair)
    held_out = synthetic_batch(cfg, HELD_OUT, gen)
    optimizer = torch.optim.AdamW(build_param_groups(net, lr=LR, weight_decay=0.0))
    steps = QUICK_STEPS if quick else STEPS
    with torch.no_grad():
        start = float(_loss(net.eval(), held_out, pair))
    torch.manual_seed(seed)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(net, synthetic_batch(cfg, BATCH, gen), pair)
        if not torch.isfinite(loss):
            return CheckResult("trains: loss falls on a synthetic task", FAIL, f"{fmt(start)} -> {float(loss)}",
                               "the loss became non-finite", f"< {FACTOR:g} × start", CAUSES)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    with torch.no_grad():
        end = float(_loss(net.eval(), held_out, pair))
    ok = end < FACTOR * start
    detail = f"held-out loss after {steps} steps (lr {LR:g}, batch {BATCH})"
    return CheckResult("trains: loss falls on a synthetic task", PASS if ok else FAIL, f"{fmt(start)} -> {fmt(end)}",
                       detail if ok else f"{detail}: did not fall below {FACTOR:g}x the start", f"< {FACTOR:g} × start",
                       "" if ok else CAUSES)
