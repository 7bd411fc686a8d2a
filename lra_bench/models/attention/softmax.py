"""Full softmax attention, the LRA Transformer's mechanism: softmax(Q K^T / sqrt(E)) V.

Cost: O(L^2) time; O(L^2) memory for ``vanilla``, O(L) for ``sdpa`` when PyTorch takes a fused kernel.
Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/transformer/transformer.py`` (flax
``nn.SelfAttention``): q/k/v/out projections without bias, xavier-uniform, no causal mask.

Masking follows LRA's ``make_attention_mask(padding_mask, padding_mask)``: a key is attended only where it is
valid, and a query that is itself masked gets flax's -1e10 bias on every key, which in float32 is a uniform
average of all values. That matters only with ``lra_code`` (LRA's ``inputs > 0`` mask: black pixels on pixel tasks,
and pads, whose outputs LRA's mean pooling counts); by default the masked queries are pads, which the encoder zeroes.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import average_masked_queries, key_mask, projections, qkv_width, split_heads

IMPLS = ("sdpa", "vanilla")


def flax_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
                          dropout: float, training: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(E) + bias) v with LRA's flax mask bias, -1e10 where ``allowed`` is False, as float32
    (LRA's dtype) computes it: a masked key weighs exactly 0, and a row with no allowed key, whose -1e10 swamps
    every score, averages all values uniformly. The mechanisms' ``lra_code`` paths share it.
    q (..., Q, E); k, v (..., K, E); allowed: bool broadcastable to (..., Q, K), or None -> (..., Q, E)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5
    if allowed is not None:
        empty = ~allowed.any(-1, keepdim=True)
        scores = scores.masked_fill(~(allowed | empty), float("-inf"))
        scores = scores.masked_fill(empty, 0.0)  # float32: score - 1e10 == -1e10 for every key
    return torch.matmul(F.dropout(scores.softmax(-1), dropout, training), v)


class SoftmaxAttention(nn.Module):
    """Multi-head bidirectional softmax attention.

    ``impl``: ``sdpa`` (``F.scaled_dot_product_attention``) or ``vanilla``, the explicit softmax(QK^T/sqrt(E))V
    of the LRA and Mega papers' baseline, which materialises the (L, L) weights.
    """

    def __init__(self, d_model: int, n_heads: int, d_qkv: int | None = None, dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"attention must be one of {IMPLS} or a mechanism config, got {impl!r}")
        self.impl = impl
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv, self.out = projections(d_model, d_qkv)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)  # (B, H, L, E)
        p = self.dropout if self.training else 0.0
        allowed = None if mask is None else key_mask(mask)[:, None, None, :]  # (B, 1, 1, L)
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            y = torch.matmul(F.dropout(torch.softmax(scores, dim=-1), p, self.training), v)
        if mask is not None and not bool(mask.all()):
            y = average_masked_queries(y, v, mask)  # LRA: a masked query averages all values
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
