"""Padding: outputs at real positions do not depend on how much padding follows or on what the pads hold.

Backbone level, on x: (B, L, D) with lengths (B,): (1) the output is zero at pads, (2) replacing the pads' values by
noise leaves real positions unchanged, (3) appending more (noisy) padding leaves them unchanged. Classifier level,
per input kind the model supports (token ids single: ListOps; pixels single: Image; token pair: Retrieval's 2B
rows): the logits are unchanged by extra padding holding random ids / pixel values. Everything in eval mode, after
``perturb_like_trained`` (a fresh model's zero biases and running means hide a missing mask).

A difference counts when it exceeds ``TOLERANCE`` times the output's scale: a changed length changes FFT sizes and
blocked reductions, so bitwise equality is not expected, but any real leak is orders of magnitude larger.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.checks import FAIL, PASS, SKIP, CheckResult, fmt
from lra_bench.models.masks import length_mask

TOLERANCE = 1e-4
LENGTHS = (100, 61, 9)  # a full row, a middle one, a short one
WIDTH = 100
EXTRA = 20  # appended pads: WIDTH + EXTRA <= CHECK_LENGTH


def scaled(diff: float, reference: torch.Tensor) -> float:
    """``diff`` relative to the output's scale (at least 1)."""
    return diff / max(1.0, float(reference.abs().max()))


# the usual reasons a backbone fails each padding row (printed beside a failure)
CAUSES = {
    "zero": "a bias, norm, residual or activation after the last mask: multiply the output by length_mask(lengths) last",
    "values": "pad values enter a mixing step unmasked: zero the pads (length_mask) before a convolution, an EMA or an "
              "FFT, and mask the keys of an attention",
    "extra": "something sized by the padded length L instead of each row's length: an FFT or a convolution kernel over "
             "L, a norm or a mean over all L positions (pads counted), positions counted from the end, BatchNorm "
             "statistics",
    "classifier": "the embedding or pooling sees pads: mean pooling over L instead of each row's length, a position "
                  "table indexed from the end, pixel 0 taken as padding; or one of the backbone rows above",
}


def threshold(reference: torch.Tensor) -> str:
    """The absolute tolerance of a padding or row check: ``TOLERANCE`` times the output's scale (at least 1)."""
    return f"≤ {fmt(TOLERANCE * max(1.0, float(reference.abs().max())))} ({TOLERANCE:g} × max(1, max |y|))"


def verdict(name: str, diff: float, reference: torch.Tensor, what: str, cause: str) -> CheckResult:
    rel = scaled(diff, reference)
    status = PASS if rel <= TOLERANCE else FAIL
    return CheckResult(name, status, f"max |Δ| {fmt(diff)}", what if status == PASS else f"{what}: changed by {fmt(diff)}",
                       threshold(reference), cause if status == FAIL else "")


@torch.no_grad()
def backbone_padding(backbone: nn.Module, d_model: int, seed: int = 0) -> list[CheckResult]:
    """The three backbone-level checks (zeros at pads, pad values, extra padding); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    real = length_mask(lengths, WIDTH)[..., None]
    x = torch.randn(len(LENGTHS), WIDTH, d_model, generator=gen)
    noisy = torch.where(real, x, 3.0 * torch.randn(x.shape, generator=gen))
    clean = x * real
    longer = torch.cat([noisy, 3.0 * torch.randn(len(LENGTHS), EXTRA, d_model, generator=gen)], dim=1)

    y_clean = backbone(clean, lengths)
    y_noisy = backbone(noisy, lengths)
    y_longer = backbone(longer, lengths)
    at_pads = float((y_noisy * ~real).abs().max())
    results = [CheckResult("pads: backbone output is zero at pads", PASS if at_pads == 0 else FAIL, f"max |y| {fmt(at_pads)}",
                           "the output at pad positions" + ("" if at_pads == 0 else " must be exactly 0 (mask it last)"),
                           "= 0 exactly", "" if at_pads == 0 else CAUSES["zero"])]
    results.append(verdict("pads: values at pads are ignored", float(((y_noisy - y_clean) * real).abs().max()), y_clean,
                           "real positions with noise instead of zeros at the pads", CAUSES["values"]))
    results.append(verdict("pads: extra padding is ignored", float(((y_longer[:, :WIDTH] - y_clean) * real).abs().max()),
                           y_clean, f"real positions with {EXTRA} more (noisy) pads", CAUSES["extra"]))
    return results


@torch.no_grad()
def classifier_padding(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], label: str, pair: bool,
                       seed: int = 0) -> CheckResult:
    """Logits with the collate's padding vs with ``EXTRA`` more pads, every pad holding random ids / pixels.
    ``make_inputs(lengths, width, pad)`` draws a batch (``pad``: ``zero`` or ``garbage``)."""

    def noisy_pads(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        width = x.size(1) + EXTRA
        noise = make_inputs(lengths.tolist(), width, "garbage")
        return torch.where(length_mask(lengths, width), F.pad(x, (0, EXTRA)), noise)

    torch.manual_seed(seed)
    docs = [torch.tensor(LENGTHS)] + ([torch.tensor(LENGTHS[::-1])] if pair else [])
    batch = [(make_inputs(lengths.tolist(), WIDTH, "zero"), lengths) for lengths in docs]
    base = net(*[t for x, lengths in batch for t in (x, lengths)])
    out = net(*[t for x, lengths in batch for t in (noisy_pads(x, lengths), lengths)])
    return verdict(f"pads: {label}", float((out - base).abs().max()), base,
                   f"{label} logits with {EXTRA} more pads holding random values", CAUSES["classifier"])


def skipped(label: str, why: str) -> CheckResult:
    return CheckResult(f"pads: {label}", SKIP, "-", why)
