"""Reformer's LSH attention (Kitaev et al., 2020, "Reformer: The Efficient Transformer", §2), as LRA runs it.

Shared QK (k_t = q_t), hashed by a random rotation R_r (E, n_buckets/2) per hash round r = 1..K:

    h_r(t) = argmax([q_t R_r ; -q_t R_r])                                   (a bucket in 0..n_buckets-1)

each round sorts the positions by (h_r(t), t) and cuts the sorted sequence into chunks of C; a query attends to
the keys of its own chunk and of the chunk before, P_r(i):

    s_ij = scale * q_i . k_j,     z_r(i) = logsumexp_{j in P_r(i)} s_ij
    o_r(i) = sum_{j in P_r(i)} exp(s_ij - z_r(i)) v_j
    o(i) = sum_r exp(z_r(i) - logsumexp_r' z_r'(i)) o_r(i)              (the rounds merged by their logsumexp)

Cost: O(K L C E) time for the chunked scores (K L x 2C) plus an O(K L log L) sort; no (L, L) tensor. Memory
O(K L E) with one round (SDPA's fused kernel over the chunks; LRA's setting), O(K L C) with several (the scores
are materialised for the logsumexp the rounds are merged by). With LRA's settings (K = 1, 10 buckets, C = L / 10)
the time is a fifth of full attention's.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/reformer/reformer_attention.py``
(``ReformerAttention``, ``lsh_attention_single_head``, ``hash_vectors``, ``look_one_back``) and ``reformer.py``.
LRA's defaults, which no task config changes (``<task>/configs/reformer_base.py`` set only model sizes):
``n_hashes=1``, ``n_buckets=10``, ``chunk_len=10`` (lines 242-245). What LRA's code does, and our defaults follow:

- one ``query`` and one ``value`` projection (DenseGeneral, xavier-uniform, no bias; shared QK), and **no output
  projection**: the heads' values are concatenated and returned (lines 332-339). Their width is the model width:
  ``qkv_features = inputs_q.shape[-1]`` (line 301) overrides the ``qkv_dim`` the block passes, so ``d_qkv`` is
  ignored unless ``out_proj=True``;
- keys are not length-normalised (``length_norm=False``, line 130) and the scores are multiplied by sqrt(E),
  ``dots * (qdim ** 0.5)`` (line 191), not divided: ``score_scale="lra"``;
- no self mask: ``bkv_t`` (the key positions) is computed but never used (line 188), so a query may attend to
  itself (``self_mask=False``);
- one fixed rotation: ``nn.stochastic(jax.random.PRNGKey(0))`` inside every call (line 149) draws the same
  (E, n_hashes, n_buckets/2) normal matrix for every layer, head, example and step, in training and evaluation;
- the sorted sequence of a head is reshaped into ``n_hashes * n_buckets`` chunks (line 145, misnamed
  ``chunk_size``), so C = L_pad / n_buckets, where L_pad pads L with zero inputs to the next multiple of
  ``chunk_len`` = 10 strictly above L (line 308); ``look_one_back`` (line 31) wraps: the first chunk looks back
  at the last one.

The block around it (``reformer.py`` ``ReformerBlock``, lines 21-85) is a plain pre-LN block: LayerNorm ->
attention -> dropout -> residual (lines 60-75), LayerNorm -> MlpBlock -> residual (lines 78-85); no reversible
layers and no chunked feed-forward, which LRA neither implements nor configures, so the shared
``TransformerEncoder`` block is LRA's Reformer block as is.

Differences from LRA:
- Padding (our rule: real outputs never depend on padding). LRA ignores its ``padding_mask`` (accepted, never
  used): pads, and the zero inputs it appends, hash into buckets 0.. like real tokens, take chunk slots and
  attention weight. Here every position where ``mask`` is False (length pads, holes, the block pad up to a
  multiple of C) gets bucket ``n_buckets``, after every real bucket, so it sorts after all valid positions in
  every round and valid positions fill the same chunk slots whatever follows them; masked keys get a -1e9
  score bias. The look-back of each round's first chunk goes to the last chunk *holding a valid position* of the
  previous round (cyclically) instead of the last chunk: the same chunk as LRA's / HF's wrap when nothing is
  padded, and independent of how much padding there is otherwise.
- C is fixed from ``max_length`` (the encoder's longest sequence) as ``max_length // n_buckets + 1``: LRA's
  inputs are always padded to the task's maximum length, so its C = L_pad / 10 is that same number per task;
  deriving it from the batch's length would make outputs depend on padding. ``chunk_length`` overrides it.
- The fixed rotation is a buffer drawn at construction from a ``torch.Generator`` seeded with ``hash_seed`` (JAX's
  PRNGKey(0) values cannot be reproduced in torch): identical in every layer and head, as in LRA, and the same in
  training and evaluation, so hashing is deterministic. (HF draws fresh rotations on every call unless its
  ``hash_seed`` is set, and a different one per head; ``rotations`` can be overwritten with per-head values.)
- Attention dropout: LRA accepts ``dropout_rate`` and never applies it; here ``dropout`` acts on the attention
  weights (as HF), and the presets set ``attn_dropout: 0`` to match LRA.
- Options for the Reformer paper's / HF's variant (``transformers`` ``LSHSelfAttention``): ``self_mask=True``
  (a query never attends to itself unless nothing else is valid: score -1e5), ``key_norm=True`` (keys scaled to
  unit RMS before the dot product) with ``score_scale="standard"`` (1/sqrt(E)), ``out_proj=True``.

Shapes: B batch, L length, D model dim, H heads, E per-head dim, K = n_hashes, C chunk length, N chunks per round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORE_SCALES = ("lra", "standard")
MASKED_KEY, SELF = -1e9, -1e5  # HF's float32 mask values: finite, so a row with no valid key stays finite
MASKED_KEY_FP16, SELF_FP16 = -1e4, -1e3


class ReformerAttention(nn.Module):
    """Multi-head LSH self-attention with shared QK; defaults are LRA's (see the module docstring)."""

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
        self_mask: bool = False,
        key_norm: bool = False,
        score_scale: str = "lra",
        out_proj: bool = False,
        hash_seed: int = 0,
    ):
        super().__init__()
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
        self.self_mask, self.key_norm, self.dropout = self_mask, key_norm, dropout
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
        H, E, K, C = self.n_heads, self.head_dim, self.n_hashes, self.chunk_length
        N = -(-L // C)
        Lp = N * C
        qk = self.query_key(x).view(B, L, H, E).transpose(1, 2)  # (B, H, L, E)
        v = self.value(x).view(B, L, H, E).transpose(1, 2)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        padded = mask is not None or Lp != L
        if Lp != L:
            qk, v = F.pad(qk, (0, 0, 0, Lp - L)), F.pad(v, (0, 0, 0, Lp - L))
            valid = F.pad(valid, (0, Lp - L), value=False)

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
        y = o[:, :, :L].transpose(1, 2).reshape(B, L, H * E)
        return y if self.out is None else self.out(y)

    def attend(self, q_c: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor,
               bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax attention within chunks: q_c (B, H, K*N, C, E), k_ctx/v_ctx (B, H, K*N, 2C, E) -> o like q_c,
        and the logsumexp z_r(i) (B, H, K*N, C) when there are several rounds to merge (None for one)."""
        B, H, KN, C, E = q_c.shape
        p = self.dropout if self.training else 0.0
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
