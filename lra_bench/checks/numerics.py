"""Numerics: eval mode is deterministic, and bf16 autocast (``trainer.precision=bf16-mixed``) stays finite.

Determinism: two eval-mode passes over the same batch give the same logits (a model that draws random projections
or hashes at every call, even in eval, would report a test accuracy that changes from run to run).
bf16: a forward and backward pass under ``torch.autocast(dtype=torch.bfloat16)`` on the device the model is on;
the logits and every gradient must be finite. The figure is the logits' largest difference from fp32, relative to
their scale (bf16 keeps 8 bits of mantissa: a few percent is normal).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.checks import FAIL, PASS, CheckResult, fmt, one_line

LENGTHS = (120, 77, 11)


def _args(make_inputs: Callable[[list[int], int, str], torch.Tensor], pair: bool) -> list[torch.Tensor]:
    lengths = torch.tensor(LENGTHS)
    args = [make_inputs(list(LENGTHS), max(LENGTHS), "zero"), lengths]
    if pair:
        args += [make_inputs(list(LENGTHS[::-1]), max(LENGTHS), "zero"), lengths.flip(0)]
    return args


@torch.no_grad()
def eval_determinism(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], pair: bool,
                     seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    args = _args(make_inputs, pair)
    net.eval()
    torch.manual_seed(seed + 1)
    first = net(*args)
    torch.manual_seed(seed + 2)  # a different generator state: eval must not draw from it
    second = net(*args)
    diff = float((first - second).abs().max())
    return CheckResult("eval: deterministic", PASS if diff == 0 else FAIL, f"max |Δ| {fmt(diff)}",
                       "two eval passes, different RNG states" + ("" if diff == 0 else ": the logits differ"), "= 0 exactly",
                       "" if diff == 0 else "dropout or noise drawn in eval mode (F.dropout without training=self.training, "
                                            "torch.rand in forward), or state kept between calls")


def bf16_autocast(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], num_classes: int, pair: bool,
                  seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    args = _args(make_inputs, pair)
    labels = torch.randint(0, num_classes, (len(LENGTHS),)).to(next(net.parameters()).device)
    device = next(net.parameters()).device.type
    net.eval()  # dropout off: the fp32 and bf16 passes compare the same function
    with torch.no_grad():
        reference = net(*args).float()
    net.zero_grad(set_to_none=True)
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = net(*args)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
    except Exception as e:  # an op without a bf16 kernel: that is the finding
        net.zero_grad(set_to_none=True)
        return CheckResult("bf16 autocast: finite", FAIL, "error", one_line(e), "runs, finite",
                           "an op without a bf16 kernel on this device: compute it in fp32 (x.float(), autocast off)")
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    net.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(logits).all())
    rel = float((logits.detach().float() - reference).abs().max()) / max(1.0, float(reference.abs().max()))
    if finite and not bad:
        return CheckResult("bf16 autocast: finite", PASS, f"rel. Δ vs fp32 {fmt(rel)}", "forward and backward under autocast",
                           "finite (Δ read only)")
    what = "non-finite logits" if not finite else f"non-finite gradients: {', '.join(bad[:4])}"
    return CheckResult("bf16 autocast: finite", FAIL, f"rel. Δ vs fp32 {fmt(rel)}", what, "finite (Δ read only)",
                       "an overflow in bf16: an exp, a sum over L or an FFT in half precision; keep it in fp32")
