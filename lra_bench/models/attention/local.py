"""Local attention, LRA's "Local Attention" baseline: softmax attention inside fixed groups of T positions.

    y_i = sum_{j in G(i), mask_j} softmax_j(q_i . k_j / sqrt(E)) v_j,     G(i) = the group of T positions holding i

Cost: O(L * T) time and memory (T = ``block_size``); no (L, L) tensor.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/local/local_attention.py`` (``LocalAttention``)
with ``local.py`` (``LocalTransformerEncoder``: ``block_size=50``; the Image and Pathfinder configs
``image/configs/{cifar10,pathfinder32}/local_base.py`` set 64). q/k/v/out projections without bias, xavier-uniform.

Default (``lra_code=False``): local attention as its name and the code's "block reshape" comment describe it,
contiguous chunks of T (``grouping="contiguous"``; what the ``local-attention`` package computes with
``window_size=T, look_backward=0, look_forward=0``), padded to a multiple of T, hiding exactly the keys whose
``mask`` is False. A query that is itself masked (a hole) gets the uniform average of its group's values, LRA's rule
for masked queries; a masked query in a right-padded tail is a pad, whose output is free.

``lra_code=True``: LRA's code (``local_attention.py`` at cd31e5c6), defects included:
- strided groups: it pads L with zero vectors to Lp = (L // T + 1) * T (lines 228-234) and reshapes (B, Lp, H, E)
  to (B, T, Lp / T, H, E), attending over axis 1 (lines 318-323), which puts i and j in one group when i = j (mod S),
  S = Lp / T: groups {s, s + S, s + 2S, ...} spread over the whole sequence;
- the padding mask is cut into *contiguous* chunks (line 342) while the queries are grouped strided, so group s is
  masked by the mask of positions s T .. s T + T - 1 (query offset q and key offset k allowed when both those
  positions are);
- the mask is padded with ``constant_values=-1e9`` (line 237), True as a bool: the appended zero vectors count as
  real in that (misaligned) mask;
- a row with no allowed key (its query position in the chunk is masked) averages its group's values uniformly
  (flax's -1e10 bias in float32).
``grouping="strided"`` without ``lra_code`` keeps the strided groups with exact masks and a stride fixed by
``max_length`` (S = max_length // T + 1; a shorter batch is padded up to the same Lp inside, so an output never
depends on how much padding a batch has).

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, T group size, S number of groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import attend, has_holes, projections, qkv_width, split_heads
from lra_bench.models.attention.softmax import flax_masked_attention

GROUPINGS = ("contiguous", "strided")


class LocalAttention(nn.Module):
    """Multi-head softmax attention within groups of ``block_size`` positions (contiguous, or LRA's code).

    ``grouping``: None follows the setting (contiguous; strided with ``lra_code``). ``max_length``: the longest
    sequence (the encoder passes its position-table length); it fixes the stride of ``grouping="strided"`` without
    ``lra_code``, S = max_length // block_size + 1 (LRA's code takes S from the batch's own length).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        block_size: int = 50,
        grouping: str | None = None,
        max_length: int | None = None,
        lra_code: bool = False,
    ):
        super().__init__()
        grouping = grouping or ("strided" if lra_code else "contiguous")
        if lra_code and grouping != "strided":
            raise ValueError(f"lra_code=True runs LRA's strided groups; got grouping={grouping!r}: leave it unset")
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        if grouping == "strided" and max_length is None and not lra_code:
            raise ValueError("grouping='strided' (LRA's reshape) needs max_length (stride max_length // block_size + 1)")
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        self.n_heads = n_heads
        self.block_size = block_size
        self.grouping = grouping
        self.lra_code = lra_code
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
        if self.lra_code:
            return self.forward_lra(x, mask)
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

    def forward_lra(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """LRA's ``LocalAttention`` as its code runs (module docstring): x (B, L, D), mask (B, L) -> (B, L, D)."""
        B, L, _ = x.shape
        T, H = self.block_size, self.n_heads
        Lp = (L // T + 1) * T  # extra_len = T - L % T: at least one zero vector appended
        S = Lp // T
        q, k, v = (F.pad(t, (0, 0, 0, Lp - L)) for t in split_heads(self.qkv(x), H))  # (B, H, Lp, E)
        E = q.size(-1)
        # group s = positions t S + s, t = 0 .. T - 1: (B, H, T, S, E) -> (B, S, H, T, E)
        qg, kg, vg = (t.view(B, H, T, S, E).permute(0, 3, 1, 2, 4) for t in (q, k, v))
        allowed = None
        if mask is not None:
            chunk = F.pad(mask, (0, Lp - L), value=True).view(B, S, 1, T)  # -1e9 padding is True; contiguous chunks
            allowed = chunk[..., :, None] & chunk[..., None, :]  # (B, S, 1, T, T): group s masked by chunk s
        y = flax_masked_attention(qg, kg, vg, allowed, self.dropout, self.training)  # (B, S, H, T, E)
        y = y.permute(0, 2, 3, 1, 4).reshape(B, H, Lp, E)[:, :, :L]  # back to position t S + s
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
