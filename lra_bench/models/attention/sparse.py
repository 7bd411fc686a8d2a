"""Sparse Transformer attention (Child et al., 2019): the "fixed" pattern, as LRA configures it.

With block length l = ``block_size`` and c summary positions, query i attends key j when

    A1(i, j):  floor(j / l) == floor(i / l)                           i and j share a block
    A2(i, j):  j mod l in {0} u {l - c, ..., l - 1}                    j is a block's summary position
    and, ``causal`` (LRA: "all attention patterns are causal"), j <= i.

    y_i = sum_{j : (A1 or A2) and mask_j} softmax_j(q_i . k_j / sqrt(E)) v_j

With ``cls_token`` position 0 attends every key and every query attends it, the pattern applying to positions 1..L-1
counted from 0 (LRA's ``use_cls_token``, set whenever the encoder pools with CLS; the dual encoder of Retrieval
pools its first position and sets it too).

Cost: a query sees its own block (l keys) and the s = c + 1 summary keys of every other block: O(L * (l + s L / l))
time, with no (L, L) tensor. That is O(L^1.5) when l ~ sqrt(L) (the paper); with LRA's fixed l = 50, c = 10 it is
0.22 L^2 score entries, about a fifth of full attention (within a chunk of queries the causal half is masked, not
skipped). Memory: the same for the scores of one chunk of ``chunk_size`` queries; beyond one chunk they are
recomputed in backward, so a layer keeps O(L E) (16K tokens fit a CPU).

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/sparse_transformer/sparse_attention.py``
(``Fixed1Pattern``, ``Fixed2Pattern``, ``build_mask``, ``use_cls_token``), ``sparse_transformer.py`` (causal
patterns; ``use_cls_token`` when ``classifier_pool == 'CLS'``) and ``lra_benchmarks/utils/train_utils.py``
(``get_model``: ``Fixed1Pattern(block_size=50)`` with ``Fixed2Pattern(block_size=50, c=10)`` for every task).
q/k/v/out projections without bias, xavier-uniform.

Differences from LRA's code: LRA builds the (L, L) mask and runs dense attention (quadratic); ours is blockwise
(``pattern_mask`` builds the explicit mask only as a reference for tests and plots). A2 includes j mod l = 0 as
LRA's ``Fixed2Pattern`` does (the paper writes the set as {t, t + 1, ..., l}, t = l - c, and l mod l = 0).
``causal=False`` (the pattern without j <= i) is an option LRA does not have. A query that is itself masked gets the
uniform average of all values, as LRA's -1e10 bias on its whole row gives, in both settings: with ``lra_code`` such
queries are black pixels and the pads, whose outputs LRA's mean pooling counts; by default they are pads, which the
encoder zeroes. Nothing else differs under ``lra_code``, so this mechanism has no option for it.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, l block length, N blocks, s summary
positions per block.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lra_bench.models.attention.heads import attend, average_masked_queries, projections, qkv_width, split_heads


def summary_offsets(block_size: int, c: int) -> list[int]:
    """A2's positions inside a block: 0 and the last c."""
    return sorted({0, *range(max(block_size - c, 0), block_size)})


def pattern_mask(L: int, block_size: int, c: int, causal: bool = True, cls_token: bool = False) -> torch.Tensor:
    """The explicit (L, L) bool pattern, True where query i may attend key j (LRA's ``build_mask``). O(L^2): a
    reference for tests and plots, never used by ``SparseAttention``."""
    o = int(cls_token)
    i = torch.arange(L - o)[:, None]
    j = torch.arange(L - o)[None, :]
    same_block = i // block_size == j // block_size
    summary = torch.isin(j % block_size, torch.tensor(summary_offsets(block_size, c)))
    pattern = (same_block | summary) & ((j <= i) if causal else True)
    return F.pad(pattern, (o, 0, o, 0), value=True)


def block_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (B, H, N, Q, X) @ b (B, H, N or 1, X, Y) -> (B, H, N, Q, Y). A b shared by every block (size 1 there) is
    multiplied once against all N * Q rows, not broadcast (which would copy it N times)."""
    if b.size(2) == 1 < a.size(2):
        B, H, N, Q, X = a.shape
        return torch.matmul(a.reshape(B, H, N * Q, X), b.squeeze(2)).view(B, H, N, Q, -1)
    return torch.matmul(a, b)


def attend_union(
    q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], dropout: float, training: bool
) -> torch.Tensor:
    """Softmax attention of q (B, H, N, Q, E) over the union of key sets ``parts`` = [(k, v, allowed), ...]: k, v
    (B, H, N or 1, K_p, E), allowed bool broadcast to (B, H, N, Q, K_p). One softmax spans every part, so keys shared
    by all query blocks (the summaries) are never copied per block. Every row must allow a key."""
    q = q * q.size(-1) ** -0.5
    low = torch.finfo(q.dtype).min  # finite, so that no row is NaN
    scores = [block_matmul(q, k.transpose(-1, -2)).masked_fill(~allowed, low) for k, _, allowed in parts]
    p = F.dropout(torch.softmax(torch.cat(scores, dim=-1), dim=-1), dropout, training)
    p_parts = p.split([sc.size(-1) for sc in scores], dim=-1)
    return sum(block_matmul(p_part, v) for p_part, (_, v, _) in zip(p_parts, parts))


class SparseAttention(nn.Module):
    """Multi-head attention restricted to the fixed pattern (own block + every block's summary positions).

    ``chunk_size``: query positions per chunk. Up to one chunk (every LRA length but Path-X's 16K) the scores are
    kept for backward as usual; beyond, each chunk is recomputed in backward (one more forward of the attention,
    which the causal pattern wins back by skipping the summaries of later blocks), so the memory a layer keeps is
    O(L E) instead of O(L^2 s / l).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        block_size: int = 50,
        c: int = 10,
        causal: bool = True,
        cls_token: bool = False,
        chunk_size: int = 4096,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        if block_size < 1 or c < 0:
            raise ValueError(f"block_size must be >= 1 and c >= 0, got {block_size} and {c}")
        self.n_heads = n_heads
        self.block_size = block_size
        self.c = c
        self.causal = causal
        self.cls_token = cls_token
        self.chunk_size = chunk_size
        self.dropout = dropout
        self.register_buffer("offsets", torch.tensor(summary_offsets(block_size, c)), persistent=False)
        self.qkv, self.out = projections(d_model, d_qkv)

    def pattern_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        valid: torch.Tensor,
        cls: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The pattern over n positions: q, k, v (B, H, n, E), valid (B, n); cls: (k0, v0, valid0) of the CLS
        token, (B, H, 1, E) twice and (B, 1), or None -> (B, H, n, E). Query blocks go in chunks of ``chunk_size``
        positions; with more than one chunk each is recomputed in backward (activation checkpointing), so a layer
        keeps no (n, n s / l) scores for backward."""
        B, H, n, _ = q.shape
        if n == 0:  # a lone CLS token
            return q
        l, s = self.block_size, len(self.offsets)
        N = -(-n // l)
        qb, kb, vb = (F.pad(t, (0, 0, 0, N * l - n)).view(B, H, N, l, -1) for t in (q, k, v))
        key_ok = F.pad(valid, (0, N * l - n), value=False).view(B, 1, N, 1, l)
        # the summary keys of all blocks, shared by every query block: (B, H, 1, N * s, E)
        ks, vs = (t[:, :, :, self.offsets].reshape(B, H, 1, N * s, -1) for t in (kb, vb))
        summary_ok = key_ok[..., self.offsets].reshape(B, 1, 1, 1, N * s)
        per_chunk = max(1, self.chunk_size // l)
        recompute = N > per_chunk and torch.is_grad_enabled()
        ys = []
        for b0 in range(0, N, per_chunk):
            b1 = min(N, b0 + per_chunk)
            K = b1 * s if self.causal else N * s  # causal: the summaries of later blocks are never seen
            args = (qb[:, :, b0:b1], kb[:, :, b0:b1], vb[:, :, b0:b1], key_ok[:, :, b0:b1],
                    ks[..., :K, :], vs[..., :K, :], summary_ok[..., :K], *(cls or ()))
            chunk = partial(self.chunk_attention, b0)
            ys.append(checkpoint(chunk, *args, use_reentrant=False) if recompute else chunk(*args))
        return torch.cat(ys, dim=2).view(B, H, N * l, -1)[:, :, :n]

    def chunk_attention(
        self,
        b0: int,
        qb: torch.Tensor,
        kb: torch.Tensor,
        vb: torch.Tensor,
        key_ok: torch.Tensor,
        ks: torch.Tensor,
        vs: torch.Tensor,
        summary_ok: torch.Tensor,
        k0: torch.Tensor | None = None,
        v0: torch.Tensor | None = None,
        valid0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Query blocks b0 .. b0 + C - 1: qb, kb, vb (B, H, C, l, E), key_ok (B, 1, C, 1, l); the summaries of blocks
        0 .. K / s - 1: ks, vs (B, H, 1, K, E), summary_ok (B, 1, 1, 1, K) -> (B, H, C, l, E)."""
        l, s, C = self.block_size, len(self.offsets), qb.size(2)
        order = torch.ones(l, l, dtype=torch.bool, device=qb.device)
        if self.causal:
            order = order.tril()  # j <= i inside the block
        own = (key_ok & order) | torch.eye(l, dtype=torch.bool, device=qb.device)  # (B, 1, C, l, l); itself always
        block = torch.arange(b0, b0 + C, device=qb.device)[:, None]
        key_block = torch.arange(ks.size(-2), device=qb.device)[None, :] // s
        other = key_block < block if self.causal else key_block != block  # (C, K): A2 outside the own block
        parts = [(kb, vb, own), (ks, vs, summary_ok & other[:, None, :])]
        if k0 is not None:
            parts.insert(0, (k0[:, :, None], v0[:, :, None], valid0[:, None, None, None, :]))  # (B, H, 1, 1, E)
        return attend_union(qb, parts, self.dropout, self.training)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended (None: all) -> (B, L, D)."""
        B, L, _ = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)  # (B, H, L, E)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        if self.cls_token:
            cls = (k[:, :, :1], v[:, :, :1], valid[:, :1])
            y = self.pattern_attention(q[:, :, 1:], k[:, :, 1:], v[:, :, 1:], valid[:, 1:], cls)
            # the CLS row attends every key (itself always)
            allowed = valid[:, None, None, :].clone()
            allowed[..., 0] = True
            y = torch.cat([attend(q[:, :, :1], k, v, allowed, self.dropout, self.training), y], dim=2)
        else:
            y = self.pattern_attention(q, k, v, valid, None)
        if mask is not None:
            y = average_masked_queries(y, v, mask)  # LRA: a masked query averages all values
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
