"""Longformer attention (Beltagy et al., 2020): a sliding window plus optional global tokens.

    y_i = sum_{j in W(i) u G, mask_j} softmax_j(q_i . k_j / sqrt(E)) v_j          for i not global
    y_i = sum_{j, mask_j} softmax_j(q~_i . k~_j / sqrt(E)) v~_j                     for i global (all keys)

W(i) = {j : -(left - 1) <= j - i <= right} with right = window_size // 2, left = window_size - right (LRA's split:
the left side counts i itself, so an odd window is symmetric and an even one reaches one further right); G = the
first ``n_global`` positions; q~, k~, v~ are the global tokens' own projections.

Cost: O(L * window_size) time and memory (blocks of window_size / 2 each attend their two neighbours; no (L, L)
tensor), plus O(L * n_global) for the global tokens.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/longformer/longformer_attention.py``
(``LongformerAttention``: ``sliding_window_size=512``, sliding-window and global q/k/v projections, the window mask
OR-ed with global rows and columns) and ``longformer.py``, whose encoder never passes a ``global_mask``: LRA's
Longformer has no global tokens, so ``n_global=0`` is its setting (``1`` makes a CLS token global, the paper's
classification recipe). Hugging Face's ``LongformerSelfAttention`` computes the same with a symmetric window
(``attention_window = 2r`` is ours with ``window_size = 2r + 1``).

Differences from LRA's code: LRA builds (L, L) masks (quadratic cost); ours is blockwise. LRA always creates the
three global projections, unused (and untrained) when nothing is global; ours creates them only for
``n_global > 0`` (so ``lra_code=True``, which otherwise computes the same, refuses global tokens). A query that is
itself masked gets the uniform average of all values, as LRA's -1e10 bias on its whole row gives, in both settings:
with ``lra_code`` such queries are black pixels and the pads, whose outputs LRA's mean pooling counts; by default
they are pads, which the encoder zeroes.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, W block length, N number of blocks.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import (attend, average_masked_queries, projections, qkv_width, split_heads,
                                              xavier_qkv_)


def with_neighbours(t: torch.Tensor) -> torch.Tensor:
    """(B, N, C, W, E) -> (B, N, C, 3W, E): each block preceded by the previous one and followed by the next (zeros
    beyond the ends)."""
    t = F.pad(t, (0, 0, 0, 0, 0, 0, 1, 1))
    return torch.cat([t[:, :-2], t[:, 1:-1], t[:, 2:]], dim=3)


class LongformerAttention(nn.Module):
    """Multi-head sliding-window attention; the first ``n_global`` positions attend and are attended globally."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        window_size: int = 512,
        n_global: int = 0,
        lra_code: bool = False,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        if window_size < 1 or n_global < 0:
            raise ValueError(f"window_size must be >= 1 and n_global >= 0, got {window_size} and {n_global}")
        if lra_code and n_global:
            raise ValueError(f"lra_code=True runs LRA's Longformer, whose encoder passes no global_mask "
                             f"(longformer.py); got n_global={n_global}: set n_global=0")
        self.lra_code = lra_code
        self.n_heads = n_heads
        self.window_size = window_size
        self.right = window_size // 2
        self.left = window_size - self.right  # counts the query itself
        self.n_global = n_global
        self.dropout = dropout
        self.qkv, self.out = projections(d_model, d_qkv)
        self.qkv_global = nn.Linear(d_model, 3 * d_qkv, bias=False) if n_global else None
        if self.qkv_global is not None:
            xavier_qkv_(self.qkv_global)

    def band(self, W: int, device: torch.device) -> torch.Tensor:
        """(W, 3W) bool: query t of a block may see key s of (previous, own, next) block, at j - i = s - W - t."""
        rel = torch.arange(3 * W, device=device)[None, :] - W - torch.arange(W, device=device)[:, None]
        return (rel >= 1 - self.left) & (rel <= self.right)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended (None: all) -> (B, L, D)."""
        B, L, _ = x.shape
        H, n_g = self.n_heads, min(self.n_global, L)
        W = min(max(self.left - 1, self.right, 1), L)  # one block either side covers the window
        N = -(-L // W)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        q, k, v = split_heads(self.qkv(x), H)  # (B, H, L, E)

        def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, C, L, E) -> (B, N, C, W, E)
            return F.pad(t, (0, 0, 0, N * W - L)).view(B, t.size(1), N, W, -1).transpose(1, 2)

        # keys of a block: its neighbours' and its own, then the global tokens (taken out of the window so that
        # no key counts twice); blocks are flattened into the batch, (B * N, C, 3W + n_g, E), so SDPA stays 4-D
        in_window = valid.clone()
        in_window[:, :n_g] = False
        keys_ok = with_neighbours(blocks(in_window[:, None, :, None])).squeeze(-1)  # (B, N, 1, 3W)
        kw, vw = with_neighbours(blocks(k)), with_neighbours(blocks(v))  # (B, N, H, 3W, E)
        if n_g:
            keys_ok = torch.cat([keys_ok, valid[:, None, None, :n_g].expand(B, N, 1, n_g)], dim=-1)
            kw = torch.cat([kw, k[:, None, :, :n_g].expand(B, N, H, n_g, -1)], dim=3)
            vw = torch.cat([vw, v[:, None, :, :n_g].expand(B, N, H, n_g, -1)], dim=3)
        band = F.pad(self.band(W, x.device), (0, n_g), value=True)  # (W, 3W + n_g)
        itself = F.pad(torch.eye(W, dtype=torch.bool, device=x.device), (W, W + n_g))
        allowed = (band & keys_ok[:, :, :, None, :]) | itself  # (B, N, 1, W, 3W + n_g)
        flat = partial(torch.flatten, start_dim=0, end_dim=1)  # (B, N, C, Q, X) -> (B * N, C, Q, X)
        y = attend(flat(blocks(q)), flat(kw), flat(vw), flat(allowed), self.dropout, self.training)
        y = y.view(B, N, H, W, -1).transpose(1, 2).reshape(B, H, N * W, -1)[:, :, :L]
        if mask is not None:
            y = average_masked_queries(y, v, mask)  # LRA: a masked query averages all values
        if n_g:
            qg, kg, vg = split_heads(self.qkv_global(x), H)
            allowed_g = valid[:, None, None, :] | F.pad(torch.eye(n_g, dtype=torch.bool, device=x.device), (0, L - n_g))
            yg = attend(qg[:, :, :n_g], kg, vg, allowed_g, self.dropout, self.training)
            if mask is not None:
                yg = torch.where(mask[:, None, :n_g, None], yg, vg.mean(dim=2, keepdim=True))
            y = torch.cat([yg, y[:, :, n_g:]], dim=2)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
