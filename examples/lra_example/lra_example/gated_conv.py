"""A bidirectional gated dilated depthwise-convolution backbone: an example of a user's own model for lra_bench.

Each of the n layers (i = 0..n-1), on x: (B, L, D), pads zeroed:

    z      = LayerNorm(x)
    u, g   = split(W_in z + b_in)                        (B, L, D) each
    u      = u * m                                       m = 1 at real positions, 0 at pads
    c      = DepthwiseConv_k,dilation=2^i(u)             centred ("same") kernel: t sees t - r .. t + r
    x      = (x + Dropout(W_out (c * sigmoid(g)) + b_out)) * m

then a final LayerNorm, and zeros at pads. Cost O(L k D) per layer, memory O(L D); the receptive field is
1 + (k - 1)(2^n - 1) positions. It follows the gated convolution of Dauphin et al. 2017 ("Language Modeling with
Gated Convolutional Networks", GLU) with ByteNet's dilation doubling (Kalchbrenner et al. 2016), made bidirectional
by a centred kernel (LRA classifies whole sequences) and depthwise (one kernel per channel) to stay small.

Why the masks sit where they do (the backbone protocol, lra_bench/models/protocol.py): the convolution is the only
place where positions mix, so ``u`` is zeroed at pads just before it. A pad then looks exactly like the zero padding
the convolution adds past the end, whatever the embedding, a bias or a LayerNorm put there, and a real position's
output does not depend on how much padding follows. The residual stream is zeroed at pads after each layer, so the
output is zero there.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.masks import length_mask
from lra_bench.models.protocol import Backbone


class GatedConvLayer(nn.Module):
    """One pre-norm residual layer: x + Dropout(W_out(DepthwiseConv(u) * sigmoid(g))), u and g from W_in(LN(x))."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.W_in = nn.Linear(d_model, 2 * d_model)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2,
                              groups=d_model)
        self.W_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), keep: (B, L, 1) with 1 at real positions -> (B, L, D), zeros at pads."""
        u, g = self.W_in(self.norm(x)).chunk(2, dim=-1)
        c = self.conv((u * keep).transpose(1, 2)).transpose(1, 2)  # pads zeroed before the only mixing step
        return (x + self.dropout(self.W_out(c * torch.sigmoid(g)))) * keep


class GatedConvEncoder(Backbone):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``: n gated dilated depthwise-conv layers.

    kernel_size: odd k (a centred kernel). dilation_growth: layer i dilates by growth^i (1 = no dilation).
    conv_lr: when set, the convolution kernels get their own optimizer group with that lr and no weight decay
    (the ``_optim`` hook of the protocol; lra_bench/training/optim.py reads it).
    """

    supported_inputs = ("tokens", "real")  # tokens (ListOps, Text, Retrieval) and pixels (Image, Pathfinder)
    max_length = None  # no position table: any length

    def __init__(self, d_model: int, n_layers: int = 4, kernel_size: int = 3, dilation_growth: int = 2,
                 dropout: float = 0.1, conv_lr: float | None = None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (a centred kernel), got {kernel_size}")
        self.layers = nn.ModuleList(GatedConvLayer(d_model, kernel_size, dilation_growth**i, dropout) for i in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        if conv_lr is not None:
            for layer in self.layers:
                layer.conv.weight._optim = {"lr": conv_lr, "weight_decay": 0.0}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[..., None].to(x.dtype)  # (B, L, 1)
        x = x * keep
        for layer in self.layers:
            x = layer(x, keep)
        return self.final_norm(x) * keep
