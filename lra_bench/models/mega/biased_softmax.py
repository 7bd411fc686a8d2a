"""Softmax attention weights with Mega's relative-position bias, in as few passes over (S, S) as possible.

Mega's full attention at L = 4096 spends as much time building, adding and differentiating its (S, S)
bias and softmax as in its matmuls (profiled: flips, pads, bias copies and fresh (B, S, S) buffers).
Two things remove most of it:

* **Keys in reverse order.** The simple bias is Toeplitz, ``T[i, j] = w[M - 1 + j - i]``. With the keys
  (and values, and key mask) reversed inside each chunk, ``j' = S - 1 - j``, it becomes Hankel,
  ``H[i, j'] = c[i + j']`` with ``c = w[M - S : M + S - 1].flip(0)``, and a Hankel matrix is a strided
  view of ``c`` (``c.unfold(0, S, 1)``, strides (1, 1)): added to the scores without being built.
  Its gradient is the anti-diagonal sums of the score gradient summed over the batch, which one
  reduction gives: write the batch sum into the left half of an (S, 2S) buffer whose right half is
  zero (kept between calls), re-view its rows with stride 2S - 1 (row i then starts i places to the
  right) and sum columns.
* **One (N, S, S) buffer.** The scores are computed, biased, masked and soft-maxed in place; the
  backward turns the incoming gradient into the score gradient in place (the softmax kernels read a
  row before writing it, so in-place is exact). Output and saved tensor are the same storage.

``hankel_biased_softmax(q, k_rev, c, pad_rev, scaling) -> P`` with ``P[n, i, j']`` the weight of key
``S - 1 - j'`` for query i; multiply by the reversed values. Exactly the math of
``softmax(scaling * q k^T + T, masked)``; the tests check it against that, values and gradients.
"""

from __future__ import annotations

import threading

import torch
from torch.autograd.function import once_differentiable


_scratch = threading.local()


def _zero_padded_scratch(S: int, like: torch.Tensor) -> torch.Tensor:
    """An (S, 2S) buffer whose right half is zero, kept between calls (per thread, device and dtype).

    A fresh one costs more than the sum written into it (first-touch page faults of 64 MB at S = 4096,
    profiled); only the left half is ever written, so the zeros stay valid while S is unchanged."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    key = (like.device, like.dtype)
    held = buffers.get(key)
    if held is None or held.shape[0] != S:
        held = buffers[key] = like.new_zeros(S, 2 * S)
    return held


class _HankelBiasedSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, k_rev: torch.Tensor, c: torch.Tensor, pad_rev: torch.Tensor | None,
                scaling: float) -> torch.Tensor:
        S = q.shape[1]
        q_scaled = q * scaling
        scores = torch.bmm(q_scaled, k_rev.transpose(1, 2))
        scores.add_(c.to(scores.dtype).unfold(0, S, 1))  # + H, a (1, 1)-strided view broadcast over N
        if pad_rev is not None:
            scores.masked_fill_(pad_rev, float("-inf"))
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)
        ctx.save_for_backward(q_scaled, k_rev, scores)
        ctx.scaling, ctx.c_dtype = scaling, c.dtype
        return scores

    @staticmethod
    @once_differentiable  # the backward works in place; a double backward gets a clear error
    def backward(ctx, grad: torch.Tensor):
        q_scaled, k_rev, weights = ctx.saved_tensors
        S = weights.shape[-1]
        grad = grad.contiguous()  # owned by this backward: the matmul that consumed the weights made it
        torch.ops.aten._softmax_backward_data.out(grad, weights, -1, weights.dtype, grad_input=grad)
        grad_q = grad_k = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_q = torch.bmm(grad, k_rev).mul_(ctx.scaling)
        if ctx.needs_input_grad[1]:
            grad_k = torch.bmm(grad.transpose(1, 2), q_scaled)
        if ctx.needs_input_grad[2]:
            buf = _zero_padded_scratch(S, grad)
            torch.sum(grad, 0, out=buf[:, :S])
            grad_c = buf.view(-1)[: S * (2 * S - 1)].view(S, 2 * S - 1).sum(0).to(ctx.c_dtype)
        return grad_q, grad_k, grad_c, None, None


def hankel_biased_softmax(q: torch.Tensor, k_rev: torch.Tensor, c: torch.Tensor, pad_rev: torch.Tensor | None,
                          scaling: float) -> torch.Tensor:
    """q, k_rev: (N, S, Z) with keys reversed; c: (2S - 1,); pad_rev: (N, 1, S) bool (True = masked key,
    reversed) or None -> weights (N, S, S), reversed over keys. Under autocast the matmuls run in the
    autocast dtype, as ``baddbmm`` would, and the softmax accumulates in fp32."""
    device = q.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        q, k_rev = q.to(dtype), k_rev.to(dtype)
    with torch.autocast(device, enabled=False):
        return _HankelBiasedSoftmax.apply(q, k_rev, c, pad_rev, scaling)
