"""Our ``ReformerAttention`` beside Hugging Face ``transformers`` ``LSHSelfAttention``, weights and rotations matched.

LRA's hashing settings (1 hash round, 10 buckets, chunk length ``length // 10 + 1``, one chunk of look-back) on
both. HF implements the Reformer paper's variant, our default (LRA's code, ``lra_code=True``, does not; see
``reformer.py``): a self mask, unit-RMS keys with 1/sqrt(E) scaling. LSHSelfAttention returns the concatenated
heads (HF's output dense sits outside it), so ours runs here without its output projection (``out_proj=False``)
and the two compute the same function. HF draws its rotations
with ``torch.randn`` after ``torch.manual_seed(hash_seed)`` on every call, one per head: ours get the same draw.
HF needs L to be a multiple of the chunk length; ``HFLSHAttention`` pads as HF's ``ReformerModel`` does (zeros,
``attention_mask`` 0, which HF sorts into an extra last bucket) and strips the pad.
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.attention.reformer import ReformerAttention

REFERENCE = "transformers==4.46"
N_HASHES, N_BUCKETS = 1, 10  # LRA's reformer_attention.py defaults


class HFLSHAttention(nn.Module):
    """``LSHSelfAttention`` (non-causal) on x: (B, L, D), padded to a chunk multiple -> (B, L, H E)."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attention = attention

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        C = self.attention.chunk_length
        extra = -L % C
        if extra or mask is not None:
            mask = torch.ones(B, L, dtype=torch.long, device=x.device) if mask is None else mask.long()
            x = torch.nn.functional.pad(x, (0, 0, 0, extra))
            mask = torch.nn.functional.pad(mask, (0, extra))
        return self.attention(x, attention_mask=mask).hidden_states[:, :L]


def hf_rotations(ours: ReformerAttention, hash_seed: int, dtype: torch.dtype) -> torch.Tensor:
    """The (H, E, K, n_buckets/2) rotations HF's ``_hash_vectors`` draws for vectors of ``dtype``."""
    torch.manual_seed(hash_seed)
    return torch.randn(ours.rotations.shape, dtype=dtype)


def match(ours: ReformerAttention, theirs: HFLSHAttention, hash_seed: int) -> None:
    """Copy our q/k and v weights into HF's module and HF's rotations (for our dtype) into ours."""
    with torch.no_grad():
        theirs.attention.query_key.weight.copy_(ours.query_key.weight)
        theirs.attention.value.weight.copy_(ours.value.weight)
        ours.rotations.copy_(hf_rotations(ours, hash_seed, ours.rotations.dtype))


def hf_attention(ours: ReformerAttention, d_model: int, hash_seed: int) -> HFLSHAttention:
    """HF's LSHSelfAttention configured as ``ours`` (heads, head size, hashes, buckets, chunk), no dropout."""
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    config = ReformerConfig(
        hidden_size=d_model, num_attention_heads=ours.n_heads, attention_head_size=ours.head_dim,
        attn_layers=["lsh"], num_hashes=ours.n_hashes, num_buckets=ours.n_buckets,
        lsh_attn_chunk_length=ours.chunk_length, lsh_num_chunks_before=1, lsh_num_chunks_after=0,
        lsh_attention_probs_dropout_prob=0.0, hash_seed=hash_seed, is_decoder=False,
    )
    return HFLSHAttention(LSHSelfAttention(config))


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D) for L <= length, the same function; no dropout."""
    torch.manual_seed(seed)
    ours = ReformerAttention(d_model, n_heads, dropout=0.0, max_length=length, n_hashes=N_HASHES,
                             n_buckets=N_BUCKETS, out_proj=False)  # our default is the paper's (HF's) variant
    theirs = hf_attention(ours, d_model, hash_seed=seed)
    match(ours, theirs, hash_seed=seed)
    return ours, theirs
