"""Multi-head plumbing every attention mechanism shares: the q/k/v width check, the fused projection's
initialisation, splitting it into heads, and LRA's rule for queries that are themselves masked.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def qkv_width(d_model: int, n_heads: int, d_qkv: int | None) -> int:
    """The q/k/v width, ``d_qkv`` or ``d_model`` by default, checked to split evenly into ``n_heads`` heads."""
    d_qkv = d_qkv or d_model
    if d_qkv % n_heads:
        raise ValueError(f"d_qkv={d_qkv} is not divisible by n_heads={n_heads}")
    return d_qkv


def xavier_qkv_(qkv: nn.Linear) -> None:
    """Xavier-uniform on each of the q, k, v (d_qkv, D) blocks of a fused projection (LRA's kernel_init)."""
    for w in qkv.weight.view(3, -1, qkv.in_features).unbind(0):
        nn.init.xavier_uniform_(w)


def projections(d_model: int, d_qkv: int) -> tuple[nn.Linear, nn.Linear]:
    """The bias-free fused q/k/v projection (D -> 3 d_qkv) and output projection (d_qkv -> D), Xavier-uniform as
    LRA's ``kernel_init`` (q, k and v each their own block)."""
    qkv = nn.Linear(d_model, 3 * d_qkv, bias=False)
    out = nn.Linear(d_qkv, d_model, bias=False)
    xavier_qkv_(qkv)
    nn.init.xavier_uniform_(out.weight)
    return qkv, out


def split_heads(qkv: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L, 3 * H * E) projections -> q, k, v each (B, H, L, E)."""
    B, L, _ = qkv.shape
    return qkv.view(B, L, 3, n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def has_holes(mask: torch.Tensor | None) -> bool:
    """Whether a masked position precedes an attendable one in some row (``mask`` is more than right padding).
    Only then is a masked query a real position whose output matters (a masked pixel, ``lra_code``)."""
    return mask is not None and bool((~mask[:, :-1] & mask[:, 1:]).any())


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool -> (B, L) bool keys to use: ``mask``, except that a row with no valid key uses all of them (no NaN;
    such a row's queries are overridden or zeroed by the caller)."""
    return mask | ~mask.any(-1, keepdim=True)


def average_masked_queries(y: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y (B, H, L, E) with each masked query's row replaced by the mean of all values v (B, H, L, E): flax's -1e10
    bias on every key of a masked query (LRA's ``make_attention_mask``) is, in float32, a uniform average."""
    return torch.where(mask[:, None, :, None], y, v.mean(dim=2, keepdim=True))


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, dropout: float, training: bool
) -> torch.Tensor:
    """softmax(q k^T / sqrt(E), over the allowed keys) v: q (B', H, Q, E), k and v (B', H, K, E), allowed
    (B', 1, Q, K) bool or None (all) -> (B', H, Q, E). Four dimensions keep SDPA on its fused CPU kernel. Every
    row must allow a key (the callers let each query see itself): an empty row is NaN on some backends."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout if training else 0.0)
