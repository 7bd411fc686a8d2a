"""Full softmax attention, the LRA Transformer's mechanism: softmax(Q K^T / sqrt(E)) V.

Cost: O(L^2) time; O(L^2) memory for ``vanilla``, O(L) for ``sdpa`` when PyTorch takes a fused kernel.
Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/transformer/transformer.py`` (flax
``nn.SelfAttention``): q/k/v/out projections without bias, xavier-uniform, no causal mask.

Masking follows LRA's ``make_attention_mask(padding_mask, padding_mask)``: a key is attended only where it is
valid, and a query that is itself masked gets flax's -1e10 bias on every key, which in float32 is a uniform
average of all values. That matters only when the mask has holes (``mask_zero_inputs`` on pixel tasks, where
black pixels are masked); for length padding the masked queries are pads, which the encoder zeroes anyway.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMPLS = ("sdpa", "vanilla")


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
        d_qkv = d_qkv or d_model
        if d_qkv % n_heads:
            raise ValueError(f"d_qkv={d_qkv} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_qkv, bias=False)
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        self.dropout = dropout
        for w in self.qkv.weight.view(3, d_qkv, d_model).unbind(0):
            nn.init.xavier_uniform_(w)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, E)
        p = self.dropout if self.training else 0.0
        key_mask = None
        if mask is not None:
            has_key = mask.any(-1, keepdim=True)  # a row without any valid key attends to all (then overridden)
            key_mask = (mask | ~has_key)[:, None, None, :]  # (B, 1, 1, L)
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            y = torch.matmul(F.dropout(torch.softmax(scores, dim=-1), p, self.training), v)
        if mask is not None and not bool(mask.all()):
            # masked queries: flax's -1e10 on every key is a uniform average of all values
            y = torch.where(mask[:, None, :, None], y, v.mean(dim=2, keepdim=True))
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
