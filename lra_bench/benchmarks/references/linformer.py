"""Our ``LinformerAttention`` beside the ``linformer`` package's ``LinformerSelfAttention``, weights matched.

LRA's settings: k = 16, one length projection shared by keys and values (E = F), no bias in q/k/v/out. The
package has separate ``proj_k`` and ``proj_v`` (seq_len, k) and a biased ``to_out``: both projections get E^T and
the bias is zeroed, so the two compute the same function of an unpadded batch (the package takes no mask).
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.attention.linformer import LinformerAttention

REFERENCE = "linformer==0.2.3"
K = 16  # LRA's low_rank_features


def match_weights(ours: LinformerAttention, theirs: nn.Module) -> None:
    """Copy ours into the package's module: q/k/v/out weights, E^T into proj_k and proj_v, zero out-bias."""
    with torch.no_grad():
        theirs.to_q.weight.copy_(ours.query.weight)
        theirs.to_k.weight.copy_(ours.key.weight)
        theirs.to_v.weight.copy_(ours.value.weight)
        theirs.to_out.weight.copy_(ours.out.weight)
        theirs.to_out.bias.zero_()
        theirs.proj_k.copy_(ours.E.T)
        theirs.proj_v.copy_(ours.E.T if ours.F is None else ours.F.T)


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D) for L <= length; no dropout."""
    from linformer import LinformerSelfAttention

    torch.manual_seed(seed)
    ours = LinformerAttention(d_model, n_heads, max_length=length, d_qkv=d_model, dropout=0.0, k=K)
    theirs = LinformerSelfAttention(dim=d_model, seq_len=length, k=K, heads=n_heads, share_kv=False, dropout=0.0)
    match_weights(ours, theirs)
    return ours, theirs

