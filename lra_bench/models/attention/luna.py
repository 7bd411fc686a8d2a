"""Luna: linear unified nested attention (Ma et al., NeurIPS 2021), as its LRA encoder runs it.

Every layer carries two sequences, the input X (B, L, D) and a memory P (B, l, D) of fixed length l:

    pack     Y_P = softmax(P W_pq (X W_pk)^T / sqrt(E)) X W_pv              (B, l, D)  keys: valid positions of X
    unpack   Y_X = softmax(X W_q (Y_P W_k)^T / sqrt(E)) Y_P W_v  W_o        (B, L, D)  keys: memory rows j < length
    X_A = LN(X + Y_X),   P' = LN(P + Y_P),   X' = LN(X_A + FFN(X_A))       (post-LN; P' is the next layer's P)

both attentions multi-head (H heads of E = D / H), every projection with a bias, no output projection on the packed
context and no activation on it. The first layer's P is a learned (l, D) table (``P`` below) plus, with sinusoidal
positions, its own sinusoidal table. Luna-256 (LRA, Mega's Table 2) is l = 256.

Cost per layer: O(B L l D) time and O(B H L l) memory for the two attention-weight tensors; linear in L for a
fixed l, never an (L, L) tensor.

Reference: ``XuezheMax/fairseq-apollo`` ``fairseq/modules/luna_attention.py`` (``LunarMultiheadAttention``:
pack = ``_compute_pcontext``, unpack = ``forward``), ``fairseq/modules/luna_sentence_encoder.py``
(``LunaSentenceEncoderLayer``), ``fairseq/models/lra/luna_lra_encoder.py`` (``LunaLRAEncoder``) and the
``luna_lra_*`` architectures in ``fairseq/models/lra/model.py``. Kept from it: untied K/V projections
(``tie_kv`` is off for LRA), the pack heads equal to the unpack heads, post-LN layers (``normalize_before=False``)
with a LayerNorm on the embedded X and P (``layernorm_embedding``), X and P scaled by sqrt(D) when positions are
sinusoidal (``embed_scale``), "dynamic projection" (a sequence of length n < l uses only memory rows j < n:
the unpack step masks the others), optional weight tying across layers (``tie_layer_weights``, the ListOps arch)
and BERT init (``apply_bert_init``: every Linear N(0, 0.02) with zero bias, P N(0, 0.02)).

Name map (ours -> fairseq-apollo): ``layers.i.attn.{pq,pk,pv,q,k,v,out}_proj`` -> ``layers.i.self_attn.<same>``;
``layers.i.norm_x`` -> ``self_attn_layer_norm``; ``layers.i.norm_p`` -> ``self_atten_proj_layer_norm``;
``layers.i.mlp.0`` / ``mlp.3`` -> ``fc1`` / ``fc2``; ``layers.i.norm_ff`` -> ``final_layer_norm``; ``P`` ->
``projected_embeddings``; ``embed_norm_x`` / ``embed_norm_p`` -> ``emb_layer_norm`` / ``proj_emb_layer_norm``;
``final_norm`` (pre-LN only) -> ``layer_norm`` (the reference's ``proj_layer_norm`` on the last P is left out:
only X leaves this backbone).

Differences from the reference, and why:
- The token embedding lives in the classifier (``SequenceClassifier``); this backbone applies only the sqrt(D) scale,
  the positions and the embedding LayerNorm. BERT init here covers the backbone; the embedding's N(0, 0.02) is the
  preset's ``embed_init_std`` and the classifier head keeps its own init.
- The reference scales its P slice in place (``px *= embed_scale`` on a view of the parameter), which autograd
  rejects; we scale out of place (same values).
- Dynamic projection slices P to min(l, L) and masks rows j >= length, where the reference slices to the batch's
  longest length: the same outputs at real positions, without a device-to-host sync.
- ``token_mask`` (positions hidden from attention although real, LRA's pixel-task quirk) is honoured as extra
  masked keys of the pack step; the reference masks only padding. A row with no valid key attends to all keys
  rather than producing NaN (it can only be a fully masked sequence, whose outputs are pads or free).
- The last (untied) layer makes no P': nothing reads it, and its post-LN ``norm_p`` would get no gradient (the
  reference computes it and trains with ``--find-unused-parameters``).
- The six input projections start with zero biases; the reference's ``reset_parameters`` zeroes only ``out_proj``'s
  and leaves those at PyTorch's default uniform init (BERT init zeroes all of them in both).

Shapes: B batch, L length, l memory length, D model dim, H heads, E = D / H head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import key_mask
from lra_bench.models.attention.transformer import MlpBlock, PositionalEncoding
from lra_bench.models.masks import length_mask


def sdpa_key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, N) bool keys -> (B, 1, 1, N) for SDPA; a row without any valid key attends to all (no NaN)."""
    return None if mask is None else key_mask(mask)[:, None, None, :]


class LunaAttention(nn.Module):
    """Pack then unpack: ``forward(x, P, x_mask, p_mask) -> (Y_X, Y_P)``, both multi-head with H heads."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.dropout = dropout
        names = ("pq_proj", "pk_proj", "pv_proj", "q_proj", "k_proj", "v_proj", "out_proj")
        for name in names:
            setattr(self, name, nn.Linear(d_model, d_model))
        # fairseq-apollo reset_parameters: xavier-uniform with gain 1/sqrt(2) on the six input projections, 1 on out
        for name in names:
            layer = getattr(self, name)
            nn.init.xavier_uniform_(layer.weight, gain=1.0 if name == "out_proj" else 2**-0.5)
            nn.init.zeros_(layer.bias)

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, H, N, E)."""
        return t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T / sqrt(E)) v per head, keys where ``mask`` (B, N) is False left out -> (B, Nq, D)."""
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v), attn_mask=sdpa_key_mask(mask), dropout_p=p)
        return y.transpose(1, 2).flatten(2)

    def pack(self, P: torch.Tensor, x: torch.Tensor, x_mask: torch.Tensor | None) -> torch.Tensor:
        """Y_P = Attn(P, X): P (B, l, D), x (B, L, D), x_mask (B, L) True at valid keys -> (B, l, D)."""
        return self.attend(self.pq_proj(P), self.pk_proj(x), self.pv_proj(x), x_mask)

    def unpack(self, x: torch.Tensor, Y_P: torch.Tensor, p_mask: torch.Tensor | None) -> torch.Tensor:
        """Y_X = Attn(X, Y_P) W_o: x (B, L, D), Y_P (B, l, D), p_mask (B, l) True at valid rows -> (B, L, D)."""
        return self.out_proj(self.attend(self.q_proj(x), self.k_proj(Y_P), self.v_proj(Y_P), p_mask))

    def forward(self, x: torch.Tensor, P: torch.Tensor, x_mask: torch.Tensor | None, p_mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        Y_P = self.pack(P, x, x_mask)
        return self.unpack(x, Y_P, p_mask), Y_P


class LunaBlock(nn.Module):
    """One Luna layer: nested attention on (X, P), then the FFN on X alone; post-LN (the reference's LRA setting)
    or pre-LN (its ``normalize_before``).

    ``update_memory=False`` (the last layer) returns no P': nothing reads it, and a post-LN ``norm_p`` that gets no
    gradient would break DDP (the reference trains with ``--find-unused-parameters`` instead).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attn_dropout: float, act_dropout: float,
                 prenorm: bool, activation: str, update_memory: bool = True):
        super().__init__()
        self.prenorm = prenorm
        self.update_memory = update_memory
        self.attn = LunaAttention(d_model, n_heads, attn_dropout)
        self.norm_x = nn.LayerNorm(d_model)
        self.norm_p = nn.LayerNorm(d_model) if prenorm or update_memory else None
        self.mlp = MlpBlock(d_model, d_ff, act_dropout, activation)
        self.norm_ff = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, P: torch.Tensor, x_mask: torch.Tensor | None, p_mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, D), P (B, l, D), masks (B, L) / (B, l) True at valid keys -> (X', P' or None)."""
        if self.prenorm:
            Y_X, Y_P = self.attn(self.norm_x(x), self.norm_p(P), x_mask, p_mask)
            x = x + self.dropout(Y_X)
            P_next = P + self.dropout(Y_P) if self.update_memory else None
            return x + self.dropout(self.mlp(self.norm_ff(x))), P_next
        Y_X, Y_P = self.attn(x, P, x_mask, p_mask)
        x = self.norm_x(x + self.dropout(Y_X))
        P_next = self.norm_p(P + self.dropout(Y_P)) if self.update_memory else None
        return self.norm_ff(x + self.dropout(self.mlp(x))), P_next


class LunaEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,), token_mask=None) -> (B, L, D)``; pad positions come out as zeros.

    ``proj_length`` is l. The constructor keeps the Transformer encoder's key names where the meaning is the same, so
    a Luna preset can start from a Transformer preset; ``d_qkv`` must be None or ``d_model`` (Luna's projections
    are D wide). ``tie_layers`` runs one layer ``n_layers`` times; ``bert_init`` re-initialises every Linear of the
    backbone to N(0, 0.02) with zero bias and P to N(0, 0.02).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        proj_length: int = 256,
        d_qkv: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
        act_dropout: float = 0.0,
        prenorm: bool = False,
        embed_norm: bool = True,
        activation: str = "gelu",
        positions: str = "sinusoidal",
        max_length: int = 4096,
        tie_layers: bool = False,
        bert_init: bool = False,
    ):
        super().__init__()
        if d_qkv not in (None, d_model):
            raise ValueError(f"Luna's projections are d_model wide (fairseq-apollo luna_attention.py); got d_qkv={d_qkv} "
                             f"with d_model={d_model}: set model.net.backbone.d_qkv: null")
        if prenorm and embed_norm:
            raise ValueError("embed_norm (a LayerNorm on the embeddings) goes with post-LN layers; the reference "
                             "asserts not (layernorm_embedding and normalize_before)")
        self.max_length = max_length
        self.n_layers = n_layers
        # sinusoidal positions come with the sqrt(D) scale, as the reference's embed_scale (X and P alike)
        self.scale = math.sqrt(d_model) if positions == "sinusoidal" else 1.0
        self.positions = PositionalEncoding(positions, max_length, d_model)
        self.P = nn.Parameter(torch.randn(proj_length, d_model) * d_model**-0.5)
        # P gets a sinusoidal table of its own; learned positions are for X only (the reference's projected_positions)
        self.P_positions = PositionalEncoding("sinusoidal" if positions == "sinusoidal" else "none", proj_length, d_model)
        self.embed_norm_x = nn.LayerNorm(d_model) if embed_norm else nn.Identity()
        self.embed_norm_p = nn.LayerNorm(d_model) if embed_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        # tied: one block run n_layers times (its P' feeds the next pass); untied: the last block has no P' to make
        n_blocks = 1 if tie_layers else n_layers
        self.layers = nn.ModuleList(
            LunaBlock(d_model, n_heads, d_ff, dropout, attn_dropout, act_dropout, prenorm, activation,
                      update_memory=(i < n_layers - 1))
            for i in range(n_blocks)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm else nn.Identity()
        if bert_init:
            nn.init.normal_(self.P, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        real = length_mask(lengths, L)  # (B, L) True at real positions
        mask = real if token_mask is None else real & token_mask
        rows = min(self.P.size(0), L)  # memory rows j >= length are masked anyway, so rows past L never count
        p_mask = length_mask(lengths, rows)  # (B, rows) dynamic projection: a sequence of length n uses rows j < n
        x_mask = None if bool(mask.all()) else mask
        p_mask = None if bool(p_mask.all()) else p_mask
        x = self.dropout(self.embed_norm_x(self.positions(x * self.scale)))
        P = self.embed_norm_p(self.P_positions((self.P[:rows] * self.scale)[None]))
        P = self.dropout(P.expand(B, -1, -1))  # per-row dropout masks, as the reference expands before dropout
        for i in range(self.n_layers):
            x, P = self.layers[i % len(self.layers)](x, P, x_mask, p_mask)
        return self.final_norm(x) * real[..., None].to(x.dtype)
