"""Local attention, LRA's "Local Attention" baseline: softmax attention inside fixed groups of T positions.

    y_i = sum_{j in G(i), mask_j} softmax_j(q_i . k_j / sqrt(E)) v_j,     G(i) = the group of T positions holding i

Cost: O(L * T) time and memory (T = ``block_size``); no (L, L) tensor.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/local/local_attention.py`` (``LocalAttention``)
with ``local.py`` (``LocalTransformerEncoder``: ``block_size=50``; the Image and Pathfinder configs
``image/configs/{cifar10,pathfinder32}/local_base.py`` set 64). q/k/v/out projections without bias, xavier-uniform.

Groups (``grouping``). ``contiguous`` (default) cuts the sequence into chunks of T: the pattern the name (and the
code's "block reshape" comment) describes, and the one the ``local-attention`` package computes (``window_size=T,
look_backward=0, look_forward=0``). ``strided`` is what LRA's code computes: it pads to Lp = (L // T + 1) * T and
reshapes (B, Lp, H, E) to (B, T, Lp / T, H, E), attending over axis 1, which puts i and j in one group when
i = j (mod S), S = Lp / T: groups {s, s + S, s + 2S, ...} spread over the whole sequence. LRA pads every batch to the
task's length, so its S is fixed by that length; ours is fixed by ``max_length`` (the encoder's position-table
length, CLS included) and a shorter batch is padded up to the same Lp inside, so an output never depends on how
much padding a batch has.

Differences from LRA's code:
- Contiguous groups by default (above); ``grouping: strided`` restores LRA's.
- LRA cuts its padding mask into contiguous chunks while its queries are grouped strided, so its mask does not line
  up with the groups (a key is hidden or shown by another position's mask). Ours hides exactly the keys whose
  ``mask`` is False, in both groupings.
- A query that is itself masked gets the uniform average of its group's values, as LRA's -1e10 bias on its whole
  row gives (the zero values of the padding inside included, as in LRA). That is only done when ``mask`` has holes
  (masked pixels with ``mask_zero_inputs``); a masked query in a right-padded tail is a pad, whose output is free.
- ``contiguous`` pads only to a multiple of T (LRA's extra all-pad block would change nothing there).

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, T group size, S number of groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import attend, has_holes, projections, qkv_width, split_heads

GROUPINGS = ("contiguous", "strided")


class LocalAttention(nn.Module):
    """Multi-head softmax attention within groups of ``block_size`` positions (contiguous, or strided as LRA's code).

    ``max_length``: the longest sequence (the encoder passes its position-table length); it fixes the stride of
    ``strided`` groups, S = max_length // block_size + 1, and is not used by ``contiguous``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        block_size: int = 50,
        grouping: str = "contiguous",
        max_length: int | None = None,
    ):
        super().__init__()
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        if grouping == "strided" and max_length is None:
            raise ValueError("grouping='strided' (LRA's reshape) needs max_length (stride max_length // block_size + 1)")
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        self.n_heads = n_heads
        self.block_size = block_size
        self.grouping = grouping
        self.max_length = max_length
        self.dropout = dropout
        self.qkv, self.out = projections(d_model, d_qkv)

    def padded_length(self, L: int) -> int:
        """Lp = S * T, the length the groups tile (strided: fixed by max_length; contiguous: L rounded up)."""
        T = self.block_size
        if self.grouping == "contiguous":
            return -(-L // T) * T
        if L > self.max_length:
            raise ValueError(f"length {L} exceeds max_length={self.max_length}, which fixes the strided groups")
        return (self.max_length // T + 1) * T

    def to_groups(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, Lp, E) -> (B * S, C, T, E): group s holds positions s * T + t (contiguous) or t * S + s (strided)."""
        B, C, Lp, E = t.shape
        T, S = self.block_size, Lp // self.block_size
        if self.grouping == "contiguous":
            t = t.view(B, C, S, T, E).transpose(1, 2)
        else:
            t = t.view(B, C, T, S, E).permute(0, 3, 1, 2, 4)
        return t.reshape(B * S, C, T, E)

    def from_groups(self, t: torch.Tensor, B: int) -> torch.Tensor:
        """Inverse of ``to_groups``: (B * S, C, T, E) -> (B, C, Lp, E)."""
        BS, C, T, E = t.shape
        t = t.view(B, BS // B, C, T, E)
        t = t.permute(0, 2, 1, 3, 4) if self.grouping == "contiguous" else t.permute(0, 2, 3, 1, 4)
        return t.reshape(B, C, BS // B * T, E)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended (None: all) -> (B, L, D)."""
        B, L, _ = x.shape
        Lp = self.padded_length(L)
        q, k, v = (F.pad(t, (0, 0, 0, Lp - L)) for t in split_heads(self.qkv(x), self.n_heads))  # (B, H, Lp, E)
        qg, kg, vg = (self.to_groups(t) for t in (q, k, v))  # (B * S, H, T, E)
        allowed = None
        if Lp > L or mask is not None:
            valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
            valid = self.to_groups(F.pad(valid, (0, Lp - L), value=False)[:, None, :, None])  # (B * S, 1, T, 1)
            # masked keys never; each query itself always, so that no row is empty (a masked query's output is free)
            itself = torch.eye(self.block_size, dtype=torch.bool, device=x.device)
            allowed = valid.transpose(-1, -2) | itself  # (B * S, 1, T, T)
        y = attend(qg, kg, vg, allowed, self.dropout, self.training)
        if has_holes(mask):
            # a masked query: LRA's -1e10 on its whole row = the uniform average of its group's values
            y = torch.where(valid, y, vg.mean(dim=-2, keepdim=True))
        y = self.from_groups(y, B)[:, :, :L]  # (B, H, L, E)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
