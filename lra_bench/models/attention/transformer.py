"""The LRA Transformer encoder, shared by every attention mechanism of the LRA paper (and Luna's own block).

Follows ``google-research/long-range-arena`` ``lra_benchmarks/models/transformer/transformer.py``: positions
(sinusoidal or learned) added to the input, then blocks of attention and an MLP, pre-LN with a final
LayerNorm by default (post-LN as an option), no causal mask. Every efficient model in LRA keeps this block,
embedding and pooling and swaps only the attention (``lra_benchmarks/models/<model>/<model>.py``), so here
the attention is a parameter: ``attention="sdpa"`` or ``"vanilla"`` (full softmax, ``softmax.py``), or a
factory (a Hydra config with ``_partial_: true``) for a mechanism in this folder or a user's own.

A mechanism is an ``nn.Module`` built as ``factory(d_model=, n_heads=, d_qkv=, dropout=, max_length=, layer_index=)``
(it takes whichever of these its constructor names; ``layer_index`` is 0 for the first block, as LRA's BigBird seeds
its random blocks with it) with ``forward(x: (B, L, D), mask: (B, L) bool | None) ->
(B, L, D)``: ``mask`` is True where a position may be attended (None: all); outputs at real positions must
not depend on masked ones.

``lra_code=True`` (the top-level switch): the block exactly as LRA's flax code computes it
(``common_layers.py`` ``MlpBlock``, ``<model>.py`` ``<Model>Block`` / ``<Model>Encoder``, flax's deprecated ``nn``):
GELU is ``nn.gelu``, the tanh approximation (``common_layers.py:157``); every LayerNorm has flax's epsilon 1e-6; the
MLP's Dense layers are xavier-uniform with N(0, 1e-6) biases (``common_layers.py:151-152``); pre-LN only. The
default keeps GELU as defined, x Phi(x) (Hendrycks & Gimpel, 2016: the tanh form is their approximation), PyTorch's
LayerNorm epsilon 1e-5 (the LayerNorm paper has none; a guard either way) and PyTorch's Linear initialisation.
Both: dropout after the positions, on each branch's output and after the MLP's activation (LRA's placement), and
the sinusoidal table computed in float64 and stored in float32 (LRA's ``sinusoidal_init``).

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from lra_bench.models.attention.softmax import IMPLS, SoftmaxAttention
from lra_bench.models.masks import length_mask


LRA_LAYERNORM_EPS = 1e-6  # flax.deprecated.nn.LayerNorm's epsilon


def sinusoidal_table(max_length: int, dim: int) -> torch.Tensor:
    """The fixed (max_length, dim) table of Vaswani et al.: sin on even, cos on odd channels. The angles are
    computed in float64 (as LRA's numpy ``sinusoidal_init``): in float32 an angle near position 4000 is off by up
    to 2.4e-4, and so is its sine."""
    position = torch.arange(max_length, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq[: dim // 2])
    return table.float()


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


def build_attention(attention: str | Callable[..., nn.Module], **common: object) -> nn.Module:
    """One layer's mechanism: ``sdpa``/``vanilla`` softmax attention, or ``attention(**common)`` passing the
    common arguments (d_model, n_heads, d_qkv, dropout, max_length, layer_index) its constructor names."""
    if isinstance(attention, str):
        if attention not in IMPLS:
            raise ValueError(f"model.net.backbone.attention must be one of {IMPLS} or a mechanism config "
                             f"(_target_ + _partial_: true), got {attention!r}")
        return SoftmaxAttention(common["d_model"], common["n_heads"], common["d_qkv"], common["dropout"], attention)
    target = getattr(attention, "func", attention)
    params = inspect.signature(target).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {k: v for k, v in common.items() if k in params or (takes_all and k != "layer_index")}
    return attention(**named)


class MlpBlock(nn.Sequential):
    """Linear(D, d_ff) -> activation -> dropout -> Linear(d_ff, D) (LRA's ``common_layers.MlpBlock``).

    ``lra_code``: flax's ``nn.gelu`` (tanh approximation) and LRA's init, xavier-uniform kernels with N(0, 1e-6)
    biases; otherwise exact GELU and PyTorch's Linear init."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str, lra_code: bool = False):
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be gelu or relu, got {activation!r}")
        act = nn.GELU(approximate="tanh" if lra_code else "none") if activation == "gelu" else nn.ReLU()
        super().__init__(nn.Linear(d_model, d_ff), act, nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        if lra_code:
            for linear in (self[0], self[3]):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.normal_(linear.bias, std=1e-6)


class TransformerBlock(nn.Module):
    """Attention then MLP, each in a residual branch; LayerNorm before (prenorm) or after each."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, prenorm: bool, activation: str, attn: nn.Module,
                 lra_code: bool = False):
        super().__init__()
        self.prenorm = prenorm
        eps = LRA_LAYERNORM_EPS if lra_code else 1e-5
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.mlp = MlpBlock(d_model, d_ff, dropout, activation, lra_code)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.prenorm:
            x = x + self.dropout(self.attn(self.norm1(x), mask))
            return x + self.dropout(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.attn(x, mask)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class TransformerEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``; pad positions come out as zeros.

    ``token_mask`` (B, L) bool, optional: further positions to hide from attention although they are real
    (LRA's ``inputs > 0``, black pixels included; the classifier passes it with ``lra_code``).
    ``lra_code``: LRA's block (module docstring); each mechanism that differs under the switch must be built with
    the same ``lra_code`` (the configs pass the one top-level key to both).
    """

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
        attention: str | Callable[..., nn.Module] = "sdpa",
        lra_code: bool = False,
    ):
        super().__init__()
        if lra_code and (not prenorm or activation != "gelu"):
            raise ValueError(f"lra_code=True runs LRA's block, pre-LN with GELU; got prenorm={prenorm}, "
                             f"activation={activation!r}: set prenorm=true, activation=gelu")
        self.lra_code = lra_code
        self.max_length = max_length
        self.positions = PositionalEncoding(positions, max_length, d_model)
        self.dropout = nn.Dropout(dropout)
        common = dict(d_model=d_model, n_heads=n_heads, d_qkv=d_qkv or d_model, dropout=attn_dropout, max_length=max_length)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, d_ff, dropout, prenorm, activation,
                             build_attention(attention, **common, layer_index=i), lra_code)
            for i in range(n_layers)
        )
        mixed = [type(layer.attn).__name__ for layer in self.layers
                 if getattr(layer.attn, "lra_code", lra_code) != lra_code]
        if mixed:
            raise ValueError(f"the block has lra_code={lra_code} but its {mixed[0]} has lra_code={not lra_code}: "
                             "build both from the one top-level lra_code")
        eps = LRA_LAYERNORM_EPS if lra_code else 1e-5
        self.final_norm = nn.LayerNorm(d_model, eps=eps) if prenorm else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        real = length_mask(lengths, x.size(1))  # (B, L) True at real positions
        mask = real if token_mask is None else real & token_mask
        attend = None if bool(mask.all()) else mask
        x = self.dropout(self.positions(x))
        for layer in self.layers:
            x = layer(x, attend)
        return self.final_norm(x) * real[..., None].to(x.dtype)
