"""Our ``PerformerAttention`` beside ``performer-pytorch``'s ``SelfAttention`` (its ``FastAttention``), matched.

``build`` uses LRA's kernel for every task but ListOps (``performer.py``'s default, generalized attention):
phi(x) = relu(x) + 1e-3 on the raw head vectors. The package has no projection-free relu path
(``generalized_kernel`` always scales the data by E^-1/4 and multiplies by its ``projection_matrix``), so it
gets the identity as its projection (M = E) and q/k weights scaled by E^1/4, which gives the same phi.

``matched(kernel="softmax")`` is FAVOR+ (LRA's ListOps kernel): the package's ``softmax_kernel`` and ours get the
same random projection; its eps is 1e-4 where LRA's is 1e-6, so ours takes 1e-4 there too (LRA's denominator
guard, which the package lacks, acts only where |R| <= 1e-6). Neither redraws. The package's out projection is
built without bias (``attn_out_bias=False``). It takes no mask (it only zeroes masked values), so both are
compared on unpadded batches.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.attention.performer import PerformerAttention

REFERENCE = "performer-pytorch==1.1.4"
PACKAGE_SOFTMAX_EPS = 1e-4  # performer_pytorch.softmax_kernel's default, which FastAttention does not override


def matched(
    d_model: int, n_heads: int, kernel: str = "relu", n_features: int = 256, seed: int = 0
) -> tuple[PerformerAttention, nn.Module]:
    """(ours, theirs): ours in LRA's form of ``kernel``, theirs configured and weighted to compute the same."""
    from performer_pytorch import SelfAttention

    torch.manual_seed(seed)
    d_head = d_model // n_heads
    if kernel == "relu":
        ours = PerformerAttention(d_model, n_heads, d_model, kernel="relu", features="deterministic")
        theirs = SelfAttention(dim=d_model, heads=n_heads, dim_head=d_head, nb_features=d_head,
                               generalized_attention=True, kernel_fn=nn.ReLU(), attn_out_bias=False)
        projection, qk_scale = torch.eye(d_head), d_head**0.25  # cancels the package's E^-1/4 data scaling
    else:
        ours = PerformerAttention(d_model, n_heads, d_model, kernel="softmax", features="ortho", n_features=n_features,
                                  redraw=False, feature_eps=PACKAGE_SOFTMAX_EPS, stabilizer=1e-6)
        theirs = SelfAttention(dim=d_model, heads=n_heads, dim_head=d_head, nb_features=n_features, attn_out_bias=False)
        projection, qk_scale = ours.projection, 1.0
    q, k, v = ours.qkv.weight.detach().chunk(3, dim=0)
    with torch.no_grad():
        theirs.to_q.weight.copy_(q * qk_scale)
        theirs.to_k.weight.copy_(k * qk_scale)
        theirs.to_v.weight.copy_(v)
        theirs.to_out.weight.copy_(ours.out.weight)
        theirs.fast_attention.projection_matrix.copy_(projection)
    return ours, theirs


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D) with LRA's default (relu) kernel; ``length`` is unused."""
    return matched(d_model, n_heads, kernel="relu", seed=seed)
