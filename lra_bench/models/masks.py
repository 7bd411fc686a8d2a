"""Padding masks from true lengths: the one source of truth for which positions are real."""

from __future__ import annotations

import torch


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True at real positions (index < length)."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the real positions of x: (B, L, D) -> (B, D); pads never count."""
    mask = length_mask(lengths, x.size(1)).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]
