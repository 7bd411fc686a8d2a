"""Mega's ``SequenceNorm``: one wrapper over layer, scale, RMS, batch and sync-batch norm (eps 1e-5).

All act on x: (B, L, D) over the channel dim D, except the batch norms, which take statistics over
batch and time of a (B, D, L) view, pads included (as the official code does; image tasks have none).
The inner module is ``.norm`` so parameter names read ``norm.norm.weight`` as in fairseq.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = ("layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm")


class ScaleNorm(nn.Module):
    """``g * x / sqrt(mean(x^2) + eps)`` with one scalar gain g (init 1): RMS norm with a shared gain.

    Not Nguyen & Salazar's ``g * x / ||x||`` with g = sqrt(D): Mega's divides by the RMS.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(dim=-1, keepdim=True)
        return self.scalar * x * torch.rsqrt(mean_square + self.eps)


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` with a per-channel weight w (init 1)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.pow(2).mean(dim=-1, keepdim=True)
        return self.weight * x * torch.rsqrt(mean_square + self.eps)


class SequenceNorm(nn.Module):
    """Normalise x: (B, L, D) with the chosen ``kind`` (see ``NORM_TYPES``)."""

    def __init__(self, kind: str, dim: int, eps: float = 1e-5):
        super().__init__()
        if kind not in NORM_TYPES:
            raise ValueError(f"norm must be one of {NORM_TYPES}, got {kind!r}")
        self.kind = kind
        if kind == "layernorm":
            self.norm: nn.Module = nn.LayerNorm(dim, eps=eps)
        elif kind == "scalenorm":
            self.norm = ScaleNorm(eps)
        elif kind == "rmsnorm":
            self.norm = RMSNorm(dim, eps)
        elif kind == "batchnorm":
            self.norm = nn.BatchNorm1d(dim, eps=eps)
        else:
            self.norm = nn.SyncBatchNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("batchnorm", "syncbatchnorm"):
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)
