"""Linformer attention (Wang et al., 2020, arXiv 2006.04768, Eq. 7): keys and values projected along the length,

    head_i = softmax(Q_i (E K_i)^T / sqrt(E_h)) (F V_i),   E, F: (k, max_length), sliced to the first L columns,

so each query attends to k mixtures of positions: O(L k) time and memory.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/linformer/linformer_attention.py`` and
``linformer.py``: one length kernel ``lr_kernel`` (max_len, low_rank_features) per layer, shared by keys and values
(E = F) and by every head, xavier-uniform, sliced to the batch's length; k = ``low_rank_features`` = 16 (the
attention's default: ``LinformerBlock`` never passes another, and ``text_classification/train.py`` never reads the
``low_rank_features = 32`` of its ``linformer_base.py``); q/k/v/out projections without bias, xavier-uniform;
flax ``dot_product_attention`` (1/sqrt(E_h) scaling, dropout on the (L, k) weights).

Differences from LRA (default; ``lra_code=True`` does what LRA's code does):
- Padding: LRA ignores the padding mask (``linformer_attention.py:149-150``, its TODO: "Does Linformer care about
  masks? Since everything is mixed in length dimension are masks relevant?"), so pads (and, with LRA's
  ``inputs > 0`` mask, black pixels) are mixed into every projected key and value. By default the rows of K and V
  where ``mask`` is False (length pads and holes) are zeroed before the length projection, so they contribute
  nothing, and outputs at real positions do not depend on how much padding follows (E's columns past the true
  length multiply zeros). A row with no valid key keeps all its keys, as in ``softmax.py``. ``lra_code`` ignores
  ``mask``.
- Order of products: E (X W_k) and E (X W_v) are computed as (E X) W_k and (E X) W_v (the projections have no
  bias, so the numbers are the same up to rounding): k L D + 2 k D d_qkv multiply-adds instead of
  2 L D d_qkv + 2 k L d_qkv, and no full-length keys or values are stored.
- ``share_kv=False`` gives a separate F (the paper's general form); LRA shares.

Shapes: B batch, L length, D model dim, H heads, E_h = d_qkv / H per-head dim, k projected length.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import scaled_dot_product_attention

from lra_bench.models.attention.heads import qkv_width


class LinformerAttention(nn.Module):
    """Multi-head Linformer attention; ``k`` projected length, ``max_length`` the longest L (E's columns)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_length: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        k: int = 16,
        share_kv: bool = True,
        lra_code: bool = False,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        self.n_heads = n_heads
        self.dropout = dropout
        self.max_length = max_length
        self.lra_code = lra_code
        self.query = nn.Linear(d_model, d_qkv, bias=False)
        self.key = nn.Linear(d_model, d_qkv, bias=False)
        self.value = nn.Linear(d_model, d_qkv, bias=False)
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        for lin in (self.query, self.key, self.value, self.out):
            nn.init.xavier_uniform_(lin.weight)
        # xavier on (k, max_length) has the bound of LRA's (max_len, k) kernel: sqrt(6 / (max_len + k))
        self.E = nn.Parameter(nn.init.xavier_uniform_(torch.empty(k, max_length)))
        self.F = None if share_kv else nn.Parameter(nn.init.xavier_uniform_(torch.empty(k, max_length)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        if L > self.max_length:
            raise ValueError(f"sequence length {L} exceeds Linformer's projection length {self.max_length}; "
                             "raise model.net.backbone.max_length")
        if mask is not None and not self.lra_code:  # LRA: no mask at all
            keep = mask | ~mask.any(-1, keepdim=True)  # a row with no valid key keeps them all
            x_kv = x * keep[..., None].to(x.dtype)  # zero rows of X are zero rows of K and V (no bias)
        else:
            x_kv = x
        E = self.E[:, :L].to(x.dtype)
        xE = E @ x_kv  # (B, k, D)
        xF = xE if self.F is None else self.F[:, :L].to(x.dtype) @ x_kv
        q = self.query(x).view(B, L, self.n_heads, -1).transpose(1, 2)  # (B, H, L, E_h)
        k = self.key(xE).view(B, -1, self.n_heads, q.size(-1)).transpose(1, 2)  # (B, H, k, E_h)
        v = self.value(xF).view(B, -1, self.n_heads, q.size(-1)).transpose(1, 2)
        y = scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
