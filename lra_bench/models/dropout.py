"""Dropout that is cheaper on CPU: the same Bernoulli(1 - p) mask, drawn as uniform >= p.

On CPU, ``F.dropout`` (``bernoulli_``) costs about 2.3x a ``rand_like`` draw and a compare (9.3 vs 4.0 ms
for 1M floats on 2 cores), and Mega applies dropout to several (B, L, D) tensors per layer. On CUDA
the fused ``F.dropout`` is faster and is used. p = 0 is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
