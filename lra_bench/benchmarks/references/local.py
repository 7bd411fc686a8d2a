"""Our ``LocalAttention`` beside the ``local-attention`` package's ``LocalAttention``, weights matched.

Configured alike: non-overlapping blocks of LRA's 50 positions (``local.py``'s ``block_size``), no causal mask.
The package's blocks are contiguous (``window_size=50, look_backward=0, look_forward=0``), so ours runs with
``grouping="contiguous"``; LRA's strided grouping is the same computation on a permuted sequence (the tests check
that too). The package brings no projections: the wrapper below holds q/k/v/out (no bias, as LRA) and copies ours.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.attention.local import LocalAttention

REFERENCE = "local-attention==1.11.2"
BLOCK = 50  # LRA's block_size (LocalTransformerEncoder)


class PackageLocalAttention(nn.Module):
    """x (B, L, D) -> (B, L, D): q/k/v projections, the package's blockwise attention, the output projection."""

    def __init__(self, d_model: int, n_heads: int, d_qkv: int, block_size: int):
        from local_attention import LocalAttention as Package

        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_qkv, bias=False)
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        self.attn = Package(window_size=block_size, causal=False, look_backward=0, look_forward=0, autopad=True,
                            dropout=0.0, use_rotary_pos_emb=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, E)
        if mask is None and L % self.attn.window_size:
            mask = torch.ones(B, L, dtype=torch.bool, device=x.device)  # else autopad's zero keys are attended
        y = self.attn(q, k, v, mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))


def match_weights(ours: LocalAttention, theirs: PackageLocalAttention) -> None:
    with torch.no_grad():
        theirs.qkv.weight.copy_(ours.qkv.weight)
        theirs.out.weight.copy_(ours.out.weight)


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D) for L <= length; no dropout."""
    torch.manual_seed(seed)
    ours = LocalAttention(d_model, n_heads, d_qkv=d_model, dropout=0.0, block_size=BLOCK, grouping="contiguous",
                          max_length=length)
    theirs = PackageLocalAttention(d_model, n_heads, d_model, BLOCK)
    match_weights(ours, theirs)
    return ours, theirs
