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


def as_key_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """A (B, L) padding mask as bool, True at real positions: bool as is, or integer/float 0/1 (the Hugging Face
    ``attention_mask`` convention). Anything else is refused with one message, on every attention path alike."""
    if mask is None:
        return None
    if mask.dim() != 2 or mask.size(1) != length:
        raise ValueError(f"mask must be (B, L) with L = {length} (True or 1 at real positions), got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be bool, or 0/1 with 1 at real positions (as Hugging Face's attention_mask)")
    return mask != 0
