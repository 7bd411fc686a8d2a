"""Reformer's LSH attention (Kitaev et al., 2020, "Reformer: The Efficient Transformer", §2), and LRA's code of it.

Shared QK (k_t = q_t), hashed by a random rotation R_r (E, n_buckets/2) per hash round r = 1..K:

    h_r(t) = argmax([q_t R_r ; -q_t R_r])                                   (a bucket in 0..n_buckets-1)

each round sorts the positions by (h_r(t), t) and cuts the sorted sequence into chunks of C; a query attends to
the keys of its own chunk and of the chunk before, P_r(i) (the paper's Eq. 3 with shared QK, k_j = q_j / ||q_j||):

    s_ij = q_i . k_j / sqrt(E),     z_r(i) = logsumexp_{j in P_r(i)} s_ij
    o_r(i) = sum_{j in P_r(i)} exp(s_ij - z_r(i)) v_j
    o(i) = sum_r exp(z_r(i) - logsumexp_r' z_r'(i)) o_r(i)              (the rounds merged by their logsumexp)

Cost: O(K L C E) time for the chunked scores (K L x 2C) plus an O(K L log L) sort; no (L, L) tensor. Memory
O(K L E) with one round (SDPA's fused kernel over the chunks; LRA's setting), O(K L C) with several (the scores
are materialised for the logsumexp the rounds are merged by). With LRA's settings (K = 1, 10 buckets, C = L / 10)
the time is a fifth of full attention's.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/reformer/reformer_attention.py``
(``ReformerAttention``, ``lsh_attention_single_head``, ``hash_vectors``, ``look_one_back``) and ``reformer.py``, at
cd31e5c6. LRA's defaults, which no task config changes (``<task>/configs/reformer_base.py`` set only model sizes):
``n_hashes=1``, ``n_buckets=10`` (lines 242-245). Both settings keep LRA's block around it (``reformer.py``
``ReformerBlock``, lines 21-85: pre-LN, no reversible layers, no chunked feed-forward, so the shared
``TransformerEncoder`` block is LRA's Reformer block as is) and one fixed rotation: LRA's
``nn.stochastic(jax.random.PRNGKey(0))`` inside every call (line 149) draws the same (E, n_hashes, n_buckets/2)
normal matrix for every layer, head, example and step. Here it is a buffer drawn at construction from a
``torch.Generator`` seeded with ``hash_seed`` (JAX's PRNGKey(0) values cannot be drawn in torch; the tests match
rotations by copying them), identical in every layer and head and the same in training and evaluation.

Default (``lra_code=False``): the Reformer paper's attention (HF's ``LSHSelfAttention``), computed as the equations
above say: keys scaled to unit RMS with 1/sqrt(E) scores (the paper's k / ||k||), a query never attends to itself
unless nothing else is valid (score -1e5), an output projection (``d_qkv`` wide), and padding that never counts:
every position where ``mask`` is False (length pads, holes, the block pad up to a multiple of C) gets bucket
``n_buckets``, after every real bucket, so valid positions fill the same chunk slots whatever follows them; masked
keys get a -1e9 score bias; the look-back of each round's first chunk goes to the last chunk *holding a valid
position* of the previous round (HF's / LRA's wrap when nothing is padded). C is fixed from ``max_length`` as
``max_length // n_buckets + 1`` (LRA's C per task; deriving it from the batch would make outputs depend on padding);
``chunk_length`` overrides it. Attention dropout acts on the weights (as HF).

``lra_code=True``: LRA's code as it runs, defects included:
- one ``query`` and one ``value`` projection (shared QK) whose width is the model width, ``qkv_features =
  inputs_q.shape[-1]`` (line 301; ``d_qkv`` is ignored), and no output projection (lines 332-339);
- keys not normalised (``length_norm=False``, line 130), scores multiplied by sqrt(E), ``dots * (qdim ** 0.5)``
  (line 191), no self mask (``bkv_t`` is computed and never used, line 188);
- ``padding_mask`` accepted and never used: pads hash and are attended like tokens. The input is padded with zero
  vectors to the next multiple of 10 strictly above L (``extra_len = chunk_len - L % chunk_len``, line 308), and the
  sorted sequence of a round is cut into ``n_buckets`` chunks (line 145, misnamed ``chunk_size``), so
  C = L_pad / n_buckets; ``look_one_back`` (line 31) wraps: the first chunk looks back at the last one of the
  previous round (of the last round, for round 0);
- the heads' outputs (B, H, L_pad, E) are reshaped to (B, L_pad, H E) without a transpose (lines 335-337) and cut to
  L: position t carries head t H // L_pad's outputs for positions t H mod L_pad .. t H mod L_pad + H - 1;
- no attention dropout (``dropout_rate`` accepted, never used).

Shapes: B batch, L length, D model dim, H heads, E per-head dim, K = n_hashes, C chunk length, N chunks per round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORE_SCALES = ("lra", "standard")
LRA_PAD_MULTIPLE = 10  # LRA's chunk_len (reformer_attention.py:242): L is padded to the next multiple strictly above
MASKED_KEY, SELF = -1e9, -1e5  # HF's float32 mask values: finite, so a row with no valid key stays finite
MASKED_KEY_FP16, SELF_FP16 = -1e4, -1e3


class ReformerAttention(nn.Module):
    """Multi-head LSH self-attention with shared QK: the paper's, or LRA's code with ``lra_code`` (module docstring).

    ``self_mask``, ``key_norm``, ``score_scale`` and ``out_proj`` default to the setting's values (None); set
    explicitly they vary the default (the HF comparison sets ``out_proj=False``: HF's module has none), and with
    ``lra_code`` only LRA's values are accepted, so the two settings never mix."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        max_length: int = 4096,
        n_hashes: int = 1,
        n_buckets: int = 10,
        chunk_length: int | None = None,
        self_mask: bool | None = None,
        key_norm: bool | None = None,
        score_scale: str | None = None,
        out_proj: bool | None = None,
        hash_seed: int = 0,
        lra_code: bool = False,
    ):
        super().__init__()
        lra = dict(self_mask=False, key_norm=False, score_scale="lra", out_proj=False)  # LRA's code
        given = dict(self_mask=self_mask, key_norm=key_norm, score_scale=score_scale, out_proj=out_proj)
        if lra_code and any(v is not None and v != lra[k] for k, v in given.items()):
            raise ValueError(f"lra_code=True runs LRA's Reformer ({lra}); got {given}: leave them unset")
        paper = dict(self_mask=True, key_norm=True, score_scale="standard", out_proj=True)
        self_mask, key_norm, score_scale, out_proj = (
            (lra if lra_code else paper)[k] if v is None else v for k, v in given.items())
        if n_buckets < 2 or n_buckets % 2:
            raise ValueError(f"n_buckets must be even and >= 2 (argmax over [xR, -xR]), got {n_buckets}")
        if score_scale not in SCORE_SCALES:
            raise ValueError(f"score_scale must be one of {SCORE_SCALES}, got {score_scale!r}")
        width = (d_qkv or d_model) if out_proj else d_model  # LRA: qkv_features = the model width, no output Dense
        if width % n_heads:
            raise ValueError(f"qk/v width {width} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, width // n_heads
        self.n_hashes, self.n_buckets = n_hashes, n_buckets
        self.chunk_length = chunk_length or max_length // n_buckets + 1
        self.self_mask, self.key_norm, self.dropout, self.lra_code = self_mask, key_norm, dropout, lra_code
        self.scale = self.head_dim ** (0.5 if score_scale == "lra" else -0.5)
        self.query_key = nn.Linear(d_model, width, bias=False)
        self.value = nn.Linear(d_model, width, bias=False)
        self.out = nn.Linear(width, d_model, bias=False) if out_proj else None
        for lin in (self.query_key, self.value, self.out):
            if lin is not None:
                nn.init.xavier_uniform_(lin.weight)
        g = torch.Generator().manual_seed(hash_seed)
        rotation = torch.randn(self.head_dim, n_hashes, n_buckets // 2, generator=g)
        self.register_buffer("rotations", rotation.expand(n_heads, -1, -1, -1).clone())  # (H, E, K, n_buckets/2)

    def hash(self, qk: torch.Tensor) -> torch.Tensor:
        """qk: (B, H, L, E) -> buckets (B, H, K, L) in 0..n_buckets-1 (no gradient flows through argmax)."""
        dtype = torch.promote_types(qk.dtype, torch.float32)  # half-precision rounding would move bucket borders
        rotated = torch.einsum("bhle,hekr->bhklr", qk.detach().to(dtype), self.rotations.to(dtype))
        return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        H, E, K = self.n_heads, self.head_dim, self.n_hashes
        if self.lra_code:  # LRA: zero inputs up to the next multiple of 10 above L, n_buckets chunks per round
            mask = None  # accepted and never used
            Lp = (L // LRA_PAD_MULTIPLE + 1) * LRA_PAD_MULTIPLE
            if Lp % self.n_buckets:
                raise ValueError(f"lra_code: LRA cuts its padded length {Lp} into n_buckets={self.n_buckets} chunks; "
                                 "n_buckets must divide it")
            N, C = self.n_buckets, Lp // self.n_buckets
        else:
            C = self.chunk_length
            N = -(-L // C)
            Lp = N * C
        qk = self.query_key(x).view(B, L, H, E).transpose(1, 2)  # (B, H, L, E)
        v = self.value(x).view(B, L, H, E).transpose(1, 2)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        padded = not self.lra_code and (mask is not None or Lp != L)  # LRA's zero pads are attended like tokens
        if Lp != L:
            qk, v = F.pad(qk, (0, 0, 0, Lp - L)), F.pad(v, (0, 0, 0, Lp - L))
            valid = F.pad(valid, (0, Lp - L), value=self.lra_code)

        # sort each round by (bucket, position); masked positions get a bucket after every real one
        buckets = self.hash(qk).masked_fill(~valid[:, None, None, :], self.n_buckets)
        order = (buckets * Lp + torch.arange(Lp, device=x.device)).argsort(dim=-1)  # (B, H, K, Lp) positions
        index = order.view(B, H, K * Lp)

        def chunked(t: torch.Tensor) -> torch.Tensor:  # (B, H, Lp, E) -> sorted (B, H, K*N, C, E)
            return t.gather(2, index[..., None].expand(-1, -1, -1, E)).view(B, H, K * N, C, E)

        q_c, v_c = chunked(qk), chunked(v)
        k_c = q_c * torch.rsqrt(q_c.pow(2).mean(-1, keepdim=True) + 1e-6) if self.key_norm else q_c
        pos_c = index.view(B, H, K * N, C)
        valid_c = valid[:, None, :].expand(B, H, Lp).gather(2, index).view(B, H, K * N, C)

        # the chunk each chunk looks back at: the one before, and for a round's first chunk the last chunk
        # holding a valid position in the previous round (LRA/HF: the last chunk, the same when unpadded)
        last_valid = None
        if padded:
            last_valid = ((valid.sum(-1) + C - 1) // C - 1).clamp(min=0)  # (B,)
        k_ctx, v_ctx, pos_ctx, valid_ctx = (
            torch.cat([t, self.look_back(t, last_valid, N)], dim=3) for t in (k_c, v_c, pos_c, valid_c)
        )  # (B, H, K*N, 2C[, E])

        bias = self.bias(pos_c, pos_ctx, valid_ctx, padded, q_c.dtype)  # (B, H, K*N, 1 or C, 2C) or None
        o, lse = self.attend(q_c, k_ctx, v_ctx, bias)
        o = o.view(B, H, K, Lp, E)

        # unsort, then merge the rounds weighted by softmax over their logsumexp
        undo = order.argsort(dim=-1)
        o = o.gather(3, undo[..., None].expand(-1, -1, -1, -1, E))
        if lse is not None:
            w = torch.softmax(lse.view(B, H, K, Lp).gather(3, undo), dim=2)
            o = (o * w[..., None]).sum(2)
        else:
            o = o.squeeze(2)
        if self.lra_code:  # LRA's reshape of (B, H, Lp, E) to (B, Lp, H E) without a transpose (lines 335-337)
            return o.reshape(B, Lp, H * E)[:, :L]
        y = o[:, :, :L].transpose(1, 2).reshape(B, L, H * E)
        return y if self.out is None else self.out(y)

    def attend(self, q_c: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor,
               bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax attention within chunks: q_c (B, H, K*N, C, E), k_ctx/v_ctx (B, H, K*N, 2C, E) -> o like q_c,
        and the logsumexp z_r(i) (B, H, K*N, C) when there are several rounds to merge (None for one)."""
        B, H, KN, C, E = q_c.shape
        p = self.dropout if self.training and not self.lra_code else 0.0  # LRA applies no attention dropout
        if self.n_hashes == 1:
            # one round needs no logsumexp: SDPA's fused kernel, never materialising the (C, 2C) scores
            flat = (B, H * KN, -1, E)  # SDPA's (batch, heads, length, dim) layout
            mask = None if bias is None else bias.view(B, H * KN, *bias.shape[-2:])
            o = F.scaled_dot_product_attention(q_c.view(flat), k_ctx.view(flat), v_ctx.view(flat), attn_mask=mask,
                                               dropout_p=p, scale=self.scale)
            return o.view(q_c.shape), None
        dots = torch.matmul(q_c * self.scale, k_ctx.transpose(-1, -2))  # (B, H, K*N, C, 2C)
        if bias is not None:
            dots = dots + bias
        lse = torch.logsumexp(dots, dim=-1)
        weights = F.dropout(torch.exp(dots - lse[..., None]), p, self.training)
        return torch.matmul(weights, v_ctx), lse

    def bias(self, pos_c: torch.Tensor, pos_ctx: torch.Tensor, valid_ctx: torch.Tensor, padded: bool,
             dtype: torch.dtype) -> torch.Tensor | None:
        """Additive score bias (B, H, K*N, 1 or C, 2C): -1e9 on masked keys, -1e5 on the query itself
        (``self_mask``; it wins over the key mask, as in HF, so a query with no other valid key attends to itself).
        HF replaces the scores by these values instead of adding them: the same weights, as |scores| << 1e5."""
        masked, own = (MASKED_KEY_FP16, SELF_FP16) if dtype == torch.float16 else (MASKED_KEY, SELF)
        zero = torch.zeros((), dtype=dtype, device=valid_ctx.device)
        bias = torch.where(valid_ctx, zero, masked)[..., None, :] if padded else None
        if self.self_mask:
            bias = torch.where(pos_c[..., :, None] == pos_ctx[..., None, :], own, zero if bias is None else bias)
        return bias

    @staticmethod
    def look_back(t: torch.Tensor, last_valid: torch.Tensor | None, N: int) -> torch.Tensor:
        """t: (B, H, K*N, ...) chunks -> the chunk each one looks back at, same shape."""
        back = torch.roll(t, 1, dims=2)
        if last_valid is not None:
            K = t.size(2) // N
            rounds = torch.arange(K, device=t.device)
            source = ((rounds - 1) % K) * N + last_valid[:, None]  # (B, K): previous round's last valid chunk
            first = t[torch.arange(t.size(0), device=t.device)[:, None], :, source]  # (B, K, H, ...)
            back[:, :, ::N] = first.transpose(1, 2)
        return back
