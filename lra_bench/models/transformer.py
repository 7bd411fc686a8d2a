"""The LRA Transformer encoder: bidirectional self-attention with key padding from true lengths.

Follows ``google-research/long-range-arena`` ``models/transformer/transformer.py`` (reference/s4.md
§12.2): positions (sinusoidal or learned) added to the input, then blocks of
attention and a GELU MLP, pre-LN with a final LayerNorm by default (post-LN as an option), q/k/v/out
projections without bias and xavier-uniform initialised, no causal mask. Attention runs through
``torch.nn.functional.scaled_dot_product_attention``.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.masks import length_mask


def sinusoidal_table(max_length: int, dim: int) -> torch.Tensor:
    """The fixed (max_length, dim) table of Vaswani et al.: sin on even, cos on odd channels."""
    position = torch.arange(max_length, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table


class PositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal, a learned (N(0, 0.02)) or no position table to x: (B, L, D)."""

    def __init__(self, kind: str, max_length: int, dim: int):
        super().__init__()
        if kind not in ("sinusoidal", "learned", "none"):
            raise ValueError(f"positions must be sinusoidal, learned or none, got {kind!r}")
        self.kind = kind
        self.max_length = max_length
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_length, dim), persistent=False)
        elif kind == "learned":
            self.table = nn.Parameter(torch.randn(max_length, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if x.size(1) > self.max_length:
            raise ValueError(
                f"sequence length {x.size(1)} exceeds the position table ({self.max_length}); "
                "raise model.backbone.max_length"
            )
        return x + self.table[: x.size(1)].to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention; q/k/v/out without bias, xavier-uniform (as LRA).

    ``impl``: ``sdpa`` (``F.scaled_dot_product_attention``, the default) or ``vanilla``, the explicit
    softmax(Q K^T / sqrt(E)) V of the LRA and Mega papers' baseline, which materialises the (L, L) weights.
    """

    def __init__(self, d_model: int, n_heads: int, d_qkv: int | None = None, attn_dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        if impl not in ("sdpa", "vanilla"):
            raise ValueError(f"attention must be sdpa or vanilla, got {impl!r}")
        self.impl = impl
        d_qkv = d_qkv or d_model
        if d_qkv % n_heads:
            raise ValueError(f"d_qkv={d_qkv} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_qkv, bias=False)
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        self.attn_dropout = attn_dropout
        for w in (self.qkv.weight.view(3, d_qkv, d_model).unbind(0)):
            nn.init.xavier_uniform_(w)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, D); key_mask: (B, 1, 1, L) bool, True where the key is real, or None (no padding)."""
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, E)
        p = self.attn_dropout if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, float("-inf"))
            y = torch.matmul(F.dropout(torch.softmax(scores, dim=-1), p, self.training), v)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))


class TransformerBlock(nn.Module):
    """Attention then MLP, each in a residual branch; LayerNorm before (prenorm) or after each."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        d_qkv: int | None,
        dropout: float,
        attn_dropout: float,
        prenorm: bool,
        activation: str,
        attention: str = "sdpa",
    ):
        super().__init__()
        self.prenorm = prenorm
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, d_qkv, attn_dropout, attention)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        if self.prenorm:
            x = x + self.dropout(self.attn(self.norm1(x), key_mask))
            return x + self.dropout(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.attn(x, key_mask)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class TransformerEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``; pad positions come out as zeros."""

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        d_qkv: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        prenorm: bool = True,
        activation: str = "gelu",
        positions: str = "sinusoidal",
        max_length: int = 4096,
        attention: str = "sdpa",
    ):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be gelu or relu, got {activation!r}")
        self.positions = PositionalEncoding(positions, max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, d_qkv, dropout, attn_dropout, prenorm, activation, attention)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = length_mask(lengths, x.size(1))  # (B, L) True at real positions
        key_mask = None if bool(mask.all()) else mask[:, None, None, :]
        x = self.dropout(self.positions(x))
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.final_norm(x) * mask[..., None].to(x.dtype)
