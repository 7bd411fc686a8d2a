"""Sparse Sinkhorn attention (Tay et al., 2020, "Sparse Sinkhorn Attention"), configured as LRA's Sinkhorn Transformer.

The sequence, padded to a multiple of the block size b, is cut into N contiguous blocks (block n holds positions
n*b .. n*b + b - 1). Per head, with K_m, V_m, Q_n the keys, values and queries of a block:

    S_n  = sum of the real keys of block n                       block summary                    (B, H, N, E)
    R    = S W / tau,  W: (E, M)                                 sort net, shared by the heads; its first
                                                                 T = min(N, M) columns score the first T blocks
    P    = softmax over targets of R                             sort_activation="softmax" (what LRA runs)
         | Sinkhorn_k(R)                                         "sinkhorn": k rounds of row then column
                                                                 normalisation in log space   (B, H, N, T)
    K~_n = sum_m P_nm K_m,   V~_n = sum_m P_nm V_m               the block "sorted" to block n
    Y_n  = softmax(Q_n K_n^T / sqrt(E)) V_n  +  softmax(Q_n K~_n^T / sqrt(E)) V~_n
           (own block: local=True)               (sorted block)   two softmaxes, summed (LRA: x + sorted_x)

Cost: O(L b E) for the two block attentions, O(L T E) to build the sorted blocks and O(N T) for P: linear in L
for a fixed b and M; nothing of size (L, L).

Reference: google-research/long-range-arena lra_benchmarks/models/sinkhorn_transformer/sinkhorn_attention.py
(``SinkhornAttention``) as ``sinkhorn_transformer.py`` and the task configs set it: block_size 50 (ListOps, Text,
Retrieval: the encoder's default) or 64 (image/configs/{cifar10,pathfinder32}/sinkhorn_base.py); max_num_blocks 25;
sort_activation "softmax" (the default, which no LRA block overrides: LRA never runs Sinkhorn balancing); local
and sorted attention both; no causal mask; q/k/v/out projections and the sort net without bias, xavier-uniform.

Default (``lra_code=False``): the paper's mechanism, computed as the equations above say, which LRA's code does not:
- Blocks are contiguous, padded to a multiple of b (any L).
- The sorted block is sum_m P_nm K_m, so the sort net learns.
- Pads never count: summaries sum real keys only; masked keys and values are zeroed before routing; the sorted
  block's key mask is "a routed block has a real key at this offset"; blocks without a real key are not routing
  targets (so the amount of padding changes nothing). A query whose own (or sorted) block has no real key gets
  nothing from that branch.
- Sinkhorn (an option; LRA's configs never select it): rows are normalised to 1 and columns to N/T (1 when
  square), ``sinkhorn_iters`` rounds at temperature ``temperature``, no clipping; the paper and the
  sinkhorn-transformer package add Gumbel noise, neither LRA nor we do.

``lra_code=True``: LRA's ``SinkhornAttention`` as it runs (``sinkhorn_attention.py`` at cd31e5c6), defects included:
- no padding: L must be a multiple of b (LRA's reshape fails otherwise; refused here with one line);
- strided blocks: (B, L, H, E) is reshaped to (B, b, N, H, E) (lines 343-348), so block n is {n, n + N, n + 2N, ...};
- the sorted blocks ``einsum('bskhd,bnhl->bsnhd', block_key, permutation)`` (lines 382-383) sum k and l
  separately: (sum_k K_k)(sum_l P_nl), the sum of all blocks times P's row sum (1 with softmax), so the sort net
  gets no gradient;
- the padding mask is cut into contiguous chunks (lines 403-404) while the blocks are strided: block n is masked by
  the mask of positions n b .. n b + b - 1 (query offset q and key offset k both allowed there); the sorted branch's
  mask ``einsum('bksj,bnhl->bnsj', ...)`` (line 418) allows offset pair (q, k) when any chunk allows it, for
  every n; masked keys get flax's -1e10, and a row with no allowed key averages all values (float32's result);
- ``sort_activation="sinkhorn"`` is LRA's ``sinkhorn_operator`` (lines 34-64) on sort_out (B, N, H, N) reshaped
  to (B H, N, N) as laid out in memory (rows of different heads mixed), one round at temperature 1 (the module's
  own ``sinkhorn_iters`` and ``temperature`` are never passed), log P clipped to [-1, 1]; it needs N <= M;
- ``temperature`` does not apply to the softmax (LRA's softmax has none).

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, b block size, N blocks,
M max_num_blocks, T = min(N, M) routing targets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import qkv_width, xavier_qkv_
from lra_bench.models.attention.softmax import flax_masked_attention

SORT_ACTIVATIONS = ("softmax", "sinkhorn")
# log-space "minus infinity" for entries outside the routing: exp gives exactly 0, and unlike -inf two of them
# subtract to a number, so a row or column with no valid entry stays finite (its result is masked anyway)
NEG = -1e9


def sinkhorn(log_alpha: torch.Tensor, n_iters: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sinkhorn balancing: (..., N, T) scores -> (..., N, T) P = exp of the scores after ``n_iters`` rounds of row
    normalisation (rows sum to 1) then column normalisation (columns sum to N/T, 1 when square), in log space.

    valid (..., N, T) bool: entries outside it are 0 in P and take no part; N and T count the valid rows and columns.
    """
    if valid is None:
        log_col_mass: torch.Tensor | float = math.log(log_alpha.size(-2) / log_alpha.size(-1))
    else:
        rows = valid.any(-1).sum(-1).clamp(min=1)
        cols = valid.any(-2).sum(-1).clamp(min=1)
        log_col_mass = (rows / cols).log()[..., None, None].to(log_alpha.dtype)
        log_alpha = log_alpha.masked_fill(~valid, NEG)
    for _ in range(n_iters):
        log_alpha = log_alpha - log_alpha.logsumexp(-1, keepdim=True)
        if valid is not None:
            log_alpha = log_alpha.masked_fill(~valid, NEG)
        log_alpha = log_alpha - log_alpha.logsumexp(-2, keepdim=True) + log_col_mass
        if valid is not None:
            log_alpha = log_alpha.masked_fill(~valid, NEG)
    return log_alpha.exp()


def lra_sinkhorn_operator(sort_out: torch.Tensor) -> torch.Tensor:
    """LRA's ``sinkhorn_operator`` as ``SinkhornAttention`` calls it (n_iters=1, temp=1, clip=1, not causal):
    sort_out (B, N, H, N) reshaped to (B H, N, N) in memory order, one row and one column log-normalisation, log P
    clipped to [-1, 1], exp, and back to (B, N, H, N)."""
    B, N, H, T = sort_out.shape
    if T != N:
        raise ValueError(f"lra_code with sort_activation='sinkhorn': LRA's sinkhorn_operator needs N <= max_num_blocks "
                         f"(square (N, N) scores), got N={N} blocks, max_num_blocks={T}")
    log_alpha = sort_out.reshape(-1, N, N)
    log_alpha = log_alpha - log_alpha.logsumexp(2, keepdim=True)
    log_alpha = log_alpha - log_alpha.logsumexp(1, keepdim=True)
    return log_alpha.clamp(-1.0, 1.0).exp().reshape(B, N, H, N)


def route_blocks(P: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The sorted blocks sum_m P_nm t_m: P (B, H, N, T), t (B, H, N, b, E) -> (B, H, N, b, E) (targets: t's first T)."""
    B, H, N, b, E = t.shape
    T = P.size(-1)
    return torch.matmul(P, t[:, :, :T].reshape(B, H, T, b * E)).view(B, H, N, b, E)


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, dropout: float,
                    training: bool) -> torch.Tensor:
    """sum_g softmax(Q_n K_ng^T / sqrt(E)) V_ng: each query block attends to G key groups (its own block, its sorted
    block) with one softmax per group, the outputs summed. q (B, H, N, b, E); k, v (B, H, N, G, c, E); key_mask
    (B, 1 | H, N, G, c) bool, True where a key may be attended, or None -> (B, H, N, b, E). A group without any
    valid key adds nothing."""
    B, H, N, b, E = q.shape
    G, c = k.shape[3:5]
    kT = k.reshape(B * H * N, G * c, E).transpose(1, 2)
    scores = torch.baddbmm(q.new_zeros(1, 1, 1), q.reshape(B * H * N, b, E), kT, beta=0.0, alpha=E**-0.5)  # 1/sqrt(E) free
    scores = scores.view(B, H, N, b, G, c)
    if key_mask is not None:
        allowed = key_mask[:, :, :, None]  # (B, 1 | H, N, 1, G, c)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)  # finite: no NaN in an all-masked group
    p = scores.softmax(-1)
    empty = None if key_mask is None else ~key_mask.any(-1)  # (B, 1 | H, N, G): groups without a valid key
    if empty is not None and bool(empty.any()):
        p = p.masked_fill(empty[:, :, :, None, :, None], 0.0)  # such a group came out uniform: it must add nothing
    p = F.dropout(p, dropout, training)
    y = torch.matmul(p.view(B * H * N, b, G * c), v.reshape(B * H * N, G * c, E))  # one matmul sums the groups
    return y.view(B, H, N, b, E)


class SinkhornAttention(nn.Module):
    """Multi-head sparse Sinkhorn attention: each block attends to itself and to a learned soft mix of blocks.

    block_size: b (LRA: 50, or 64 on the image tasks). max_num_blocks: M, the sort net's width; only the first M
    blocks can be routed to (LRA: 25). sort_activation: ``softmax`` (LRA) or ``sinkhorn``. sinkhorn_iters and
    temperature: the Sinkhorn rounds and tau, R / tau in both activations (LRA's ``sinkhorn_operator`` defaults:
    1 and 1.0). local: also attend to the own block (LRA: always). lra_code: LRA's code (module docstring).
    """

    def __init__(self, d_model: int, n_heads: int, d_qkv: int | None = None, dropout: float = 0.0, block_size: int = 50,
                 max_num_blocks: int = 25, sort_activation: str = "softmax", sinkhorn_iters: int = 1,
                 temperature: float = 1.0, local: bool = True, lra_code: bool = False):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        if sort_activation not in SORT_ACTIVATIONS:
            raise ValueError(f"sort_activation must be one of {SORT_ACTIVATIONS}, got {sort_activation!r}")
        if block_size < 1 or max_num_blocks < 1 or sinkhorn_iters < 0 or temperature <= 0:
            raise ValueError(f"need block_size >= 1, max_num_blocks >= 1, sinkhorn_iters >= 0 and temperature > 0, got "
                             f"{block_size}, {max_num_blocks}, {sinkhorn_iters}, {temperature}")
        if lra_code and not local:
            raise ValueError("lra_code=True runs LRA's x + sorted_x: local must stay True")
        self.n_heads = n_heads
        self.block_size = block_size
        self.max_num_blocks = max_num_blocks
        self.sort_activation = sort_activation
        self.sinkhorn_iters = sinkhorn_iters
        self.temperature = temperature
        self.local = local
        self.lra_code = lra_code
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_qkv, bias=False)
        self.sort_net = nn.Linear(d_qkv // n_heads, max_num_blocks, bias=False)  # W: one block score per target
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        xavier_qkv_(self.qkv)
        nn.init.xavier_uniform_(self.sort_net.weight)
        nn.init.xavier_uniform_(self.out.weight)

    def permutation(self, k: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """P: (B, H, N, T) from keys k (B, H, N, b, E) whose masked entries are zero; key_mask (B, 1, N, b) or None."""
        T = min(k.size(2), self.max_num_blocks)
        R = F.linear(k.sum(3), self.sort_net.weight[:T])  # block summaries S (B, H, N, E) -> R (B, H, N, T)
        R = R.float() if R.dtype in (torch.float16, torch.bfloat16) else R  # normalisations in fp32 at least
        R = R / self.temperature
        valid = None
        if key_mask is not None:
            real = key_mask.any(-1)  # (B, 1, N): blocks with a real key
            valid = real[..., :, None] & real[..., None, :T]
        if self.sort_activation == "sinkhorn":
            P = sinkhorn(R, self.sinkhorn_iters, valid)
        else:
            P = (R if valid is None else R.masked_fill(~valid, NEG)).softmax(-1)
        return P.to(k.dtype)

    def key_groups(self, own: torch.Tensor, sorted_: torch.Tensor) -> torch.Tensor:
        """The keys (values, masks) each block attends to: (B, H, N, b, ...) own and sorted -> (B, H, N, G, b, ...),
        G = 2 (own block, sorted block) with ``local``, else 1 (the sorted block)."""
        return torch.stack([own.expand_as(sorted_), sorted_], 3) if self.local else sorted_[:, :, :, None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        if self.lra_code:
            return self.forward_lra(x, mask)
        B, L, _ = x.shape
        H, b = self.n_heads, self.block_size
        N = -(-L // b)
        pad = N * b - L
        qkv = self.qkv(x)
        zero_masked = mask is not None  # the block padding added below is zeros already; a caller's mask is not
        if pad:
            qkv = F.pad(qkv, (0, 0, 0, pad))
            mask = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
            mask = F.pad(mask, (0, pad), value=False)
        qkv = qkv.view(B, N, b, 3, H, -1)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # (B, H, N, b, E): block n holds positions n b + s
        key_mask = None if mask is None else mask.view(B, N, b)[:, None]  # (B, 1, N, b)
        if zero_masked:  # zeroed, masked keys and values drop out of the summaries and the sorted blocks
            k = k * key_mask[..., None].to(k.dtype)
            v = v * key_mask[..., None].to(v.dtype)
        P = self.permutation(k, key_mask)  # (B, H, N, T)
        k_sorted, v_sorted = route_blocks(P, k), route_blocks(P, v)
        # key s of the sorted block is attended where a routed block has a real key s
        sorted_mask = None if key_mask is None else torch.matmul(P, key_mask[:, :, :P.size(-1)].to(P.dtype)) > 0
        k, v = self.key_groups(k, k_sorted), self.key_groups(v, v_sorted)
        key_mask = None if key_mask is None else self.key_groups(key_mask, sorted_mask)
        y = block_attention(q, k, v, key_mask, self.dropout, self.training)
        y = y.permute(0, 2, 3, 1, 4)  # (B, N, b, H, E)
        return self.out(y.reshape(B, N * b, -1)[:, :L])

    def forward_lra(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """LRA's ``SinkhornAttention`` as its code runs (module docstring): x (B, L, D), mask (B, L) -> (B, L, D)."""
        B, L, _ = x.shape
        H, b = self.n_heads, self.block_size
        if L % b:
            raise ValueError(f"lra_code: LRA's Sinkhorn reshapes length {L} into blocks of {b} without padding; "
                             "its length must be a multiple of block_size")
        N = L // b
        # (B, L, H, E) -> (B, b, N, H, E): block n holds positions s N + n (lines 343-348)
        q, k, v = (t.reshape(B, b, N, H, -1) for t in self.qkv(x).view(B, L, 3, H, -1).unbind(2))
        sort_out = F.linear(k.sum(1), self.sort_net.weight)[..., :N]  # (B, N, H, T), T = min(N, M) (lines 355-366)
        if self.sort_activation == "sinkhorn":
            P = lra_sinkhorn_operator(sort_out)
        else:
            P = sort_out.softmax(-1)
        # einsum('bskhd,bnhl->bsnhd'): (sum over blocks k)(sum over targets l), for every block n (lines 382-383)
        row_sum = P.sum(-1)[:, None, :, :, None]  # (B, 1, N, H, 1)
        k_sorted, v_sorted = k.sum(2, keepdim=True) * row_sum, v.sum(2, keepdim=True) * row_sum  # (B, b, N, H, E)
        own = sorted_ = None
        if mask is not None:
            chunk = mask.view(B, N, b)  # contiguous chunks: block n is masked by positions n b .. n b + b - 1
            pair = chunk[:, :, :, None] & chunk[:, :, None, :]  # (B, N, b, b)
            own = pair[:, :, None]  # (B, N, 1, b, b)
            # einsum('bksj,bnhl->bnsj', pair, P) > 0: some chunk allows (s, j); sum_h sum_l P > 0 for every n
            sorted_ = pair.any(1, keepdim=True)[:, :, None] & (P.sum((-1, -2)) > 0)[:, :, None, None, None]

        def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, b, N, H, E) -> (B, N, H, b, E): attention over b
            return t.permute(0, 2, 3, 1, 4)

        y = flax_masked_attention(blocks(q), blocks(k), blocks(v), own, self.dropout, self.training)
        y = y + flax_masked_attention(blocks(q), blocks(k_sorted), blocks(v_sorted), sorted_, self.dropout,
                                      self.training)
        return self.out(y.permute(0, 3, 1, 2, 4).reshape(B, L, -1))  # (B, b, N, H, E): position s N + n
