"""Input embeddings: token ids (text tasks, or pixels as tokens) and real numbers (pixels as values)."""

from __future__ import annotations

import torch
from torch import nn


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` with a chosen init: N(0, 1) in LRA, N(0, D^-1/2) in Mega.

    ``init_std=None`` means D^-1/2. ``padding_idx`` is 0 for text (its row gets no gradient) and None
    for pixel tokens, where 0 is a black pixel. The pad row is initialised like the others (as Mega
    does); pads never reach the output because every backbone masks them by length.
    """

    def __init__(self, vocab_size: int, dim: int, init_std: float | None = None, padding_idx: int | None = 0):
        super().__init__(vocab_size, dim, padding_idx=padding_idx)
        std = dim**-0.5 if init_std is None else init_std
        nn.init.normal_(self.weight, mean=0.0, std=std)


class RealNumberEmbedding(nn.Module):
    """Per-position scalar input x -> x * w + b with w, b in R^D (Mega's ``RealNumberEmbedding``).

    w ~ N(0, 1), b ~ N(0, 0.1). ``x`` arrives as raw ids (pixel values 0..255) and is normalised
    here as ``(x / scale - mean) / std``, so the cache stays uint8.
    """

    def __init__(self, dim: int, scale: float = 255.0, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim))
        self.bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.scale, self.mean, self.std = scale, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x.to(self.weight.dtype) / self.scale - self.mean) / self.std
        return v[..., None] * self.weight + self.bias
