"""Input embeddings: token ids (text tasks, or pixels as tokens) and real numbers (pixels as values)."""

from __future__ import annotations

import torch
from torch import nn

# sd of a standard normal truncated to [-2, 2]: flax's variance_scaling divides by it (jax.nn.initializers)
FLAX_TRUNCATED_NORMAL_SD = 0.87962566103423978
EMBED_INITS = ("normal", "lecun_onehot")


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` with a chosen init: N(0, 1) in LRA, N(0, D^-1/2) in Mega, or a one-hot Dense (S5, LRU).

    ``init="normal"``: N(0, init_std), ``init_std=None`` meaning D^-1/2. ``init="lecun_onehot"``: what S5 and
    minimal-LRU run, one-hot tokens (width ``fan_in``, default the vocabulary) into a flax ``nn.Dense``, i.e. this
    table drawn from flax's ``lecun_normal`` (a normal truncated at +-2 sd, rescaled to sd ``fan_in``^-1/2) plus
    a bias added to every token, zero at init. ``padding_idx`` is 0 for text (its row gets no gradient) and None
    for pixel tokens, where 0 is a black pixel. The pad row is initialised like the others (as Mega does); pads
    never reach the output because every backbone masks them by length.
    """

    def __init__(self, vocab_size: int, dim: int, init_std: float | None = None, padding_idx: int | None = 0,
                 init: str = "normal", fan_in: int | None = None):
        super().__init__(vocab_size, dim, padding_idx=padding_idx)
        if init == "normal":
            std = dim**-0.5 if init_std is None else init_std
            nn.init.normal_(self.weight, mean=0.0, std=std)
            self.bias = None
        elif init == "lecun_onehot":
            fan_in = vocab_size if fan_in is None else fan_in
            if fan_in < vocab_size:
                raise ValueError(f"embed_fan_in={fan_in} is below the vocabulary ({vocab_size}): the one-hot width "
                                 f"must hold every id; set it to at least {vocab_size} or null")
            # flax variance_scaling(1, fan_in, truncated_normal): sd 1/sqrt(fan_in) after truncation at +-2
            raw = fan_in**-0.5 / FLAX_TRUNCATED_NORMAL_SD
            nn.init.trunc_normal_(self.weight, mean=0.0, std=raw, a=-2 * raw, b=2 * raw)
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            raise ValueError(f"embed_init must be one of {EMBED_INITS}, got {init!r}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = super().forward(tokens)
        return x if self.bias is None else x + self.bias


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
