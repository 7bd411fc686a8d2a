"""Our ``SinkhornAttention`` beside the ``sinkhorn-transformer`` package's ``SinkhornSelfAttention``, weights matched.

Configured as close to LRA as the package allows: blocks of LRA's 50 positions, no causal mask, every head sorted
(``n_local_attn_heads=0``), each block routed to one soft mix of blocks (``n_sortcut=0``), a learned linear sort
net on block sums (``use_simple_sort_net=True``, the package's nearest to LRA's), Sinkhorn balancing with LRA's
``sinkhorn_operator`` defaults (1 round, temperature 1; LRA itself runs a row softmax, which the package lacks).
q/k/v/out weights are copied from ours and the package's output bias is zeroed (LRA has none).

Where the package's math differs from ours (and LRA's), so outputs differ in general:
- one softmax over the concatenated [sorted block; own block] keys (LRA and ours: two softmaxes, summed);
- with ``n_sortcut=0`` the sorted block's *values* are its keys (``b_v_r = b_k_r.reshape(...)``, a package bug);
- its sort net is relu(W [sum q; sum k]) with Gumbel noise on every call, and needs L = max_seq_len; its key mask
  for the sorted block is the mask of the arg-max block.
The parts that agree are tested in ``tests/test_attention_sinkhorn.py``: the Sinkhorn operator, the block
reordering, and the whole layer where routing is trivial (one block, ``n_sortcut=1``).
The package needs L to be a multiple of the block size: ``PackageSinkhornAttention`` pads with masked zeros and strips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.sinkhorn import SinkhornAttention

REFERENCE = "sinkhorn-transformer==0.11.4"
BLOCK = 50  # LRA's block_size on Text (SinkhornTransformerEncoder's default)


class PackageSinkhornAttention(nn.Module):
    """The package's ``SinkhornSelfAttention`` on x: (B, L, D), padded to a block multiple -> (B, L, D)."""

    def __init__(self, d_model: int, n_heads: int, block_size: int, max_length: int, n_sortcut: int = 0):
        from sinkhorn_transformer.sinkhorn_transformer import SinkhornSelfAttention

        super().__init__()
        self.block_size = block_size
        self.attn = SinkhornSelfAttention(
            d_model, block_size, -(-max_length // block_size) * block_size, heads=n_heads, dim_head=d_model // n_heads,
            causal=False, non_permutative=False, sinkhorn_iter=1, n_sortcut=n_sortcut, temperature=1.0,
            attn_dropout=0.0, dropout=0.0, use_simple_sort_net=True, n_local_attn_heads=0,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        extra = -L % self.block_size
        if extra:
            mask = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
            x, mask = F.pad(x, (0, 0, 0, extra)), F.pad(mask, (0, extra), value=False)
        return self.attn(x, input_mask=mask)[:, :L]


def match_weights(ours: SinkhornAttention, theirs: PackageSinkhornAttention) -> None:
    """Copy our q/k/v/out projections into the package's ``to_q``, ``to_kv``, ``to_out``; zero its output bias."""
    w_q, w_k, w_v = ours.qkv.weight.chunk(3, dim=0)
    with torch.no_grad():
        theirs.attn.to_q.weight.copy_(w_q)
        theirs.attn.to_kv.weight.copy_(torch.cat([w_k, w_v]))
        theirs.attn.to_out.weight.copy_(ours.out.weight)
        theirs.attn.to_out.bias.zero_()


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D), L = ``length`` (the package's sort net fixes it); no dropout."""
    torch.manual_seed(seed)
    ours = SinkhornAttention(d_model, n_heads, d_qkv=d_model, dropout=0.0, block_size=BLOCK)
    theirs = PackageSinkhornAttention(d_model, n_heads, BLOCK, length)
    match_weights(ours, theirs)
    return ours, theirs
