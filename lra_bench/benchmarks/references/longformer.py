"""Our ``LongformerAttention`` beside Hugging Face's ``LongformerSelfAttention`` (transformers 4.46), weights matched.

Configured alike: a window of 512 (LRA's ``sliding_window_size``) and the first token global (the Longformer paper's
classification setting; LRA's own encoder makes nothing global). HF's window is symmetric, 256 keys either side of
the query (``attention_window=512``), which is ours with ``window_size=513`` (LRA's 512 splits as 255 left, 256
right). HF's module stops before the output projection and its q/k/v have biases: the wrapper adds the output
projection, zeroes the biases and copies ours, and does what ``LongformerModel`` does around the layer (pads to a
multiple of the window, builds the -10000 / 0 / +10000 mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.longformer import LongformerAttention

REFERENCE = "transformers==4.46.3"
WINDOW = 512  # LRA's sliding_window_size; HF attention_window (two-sided)
N_GLOBAL = 1


class HFLongformerAttention(nn.Module):
    """x (B, L, D), mask (B, L) bool or None -> (B, L, D): HF's self-attention layer and an output projection."""

    def __init__(self, d_model: int, n_heads: int, attention_window: int, n_global: int):
        from transformers import LongformerConfig
        from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

        super().__init__()
        config = LongformerConfig(hidden_size=d_model, num_attention_heads=n_heads, attention_window=[attention_window],
                                  attention_probs_dropout_prob=0.0)
        self.attn = LongformerSelfAttention(config, layer_id=0)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.attention_window = attention_window
        self.n_global = n_global

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        pad = -L % self.attention_window  # HF's layer needs a multiple of the window (LongformerModel pads)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        valid = F.pad(valid, (0, pad), value=False)
        is_global = torch.zeros_like(valid)
        is_global[:, : self.n_global] = valid[:, : self.n_global]
        attention_mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
        attention_mask = attention_mask.masked_fill(~valid, -10000.0).masked_fill(is_global, 10000.0)
        y = self.attn(F.pad(x, (0, 0, 0, pad)), attention_mask=attention_mask, is_index_masked=~valid,
                      is_index_global_attn=is_global, is_global_attn=bool(is_global.any()))[0]
        return self.out(y[:, :L])


def match_weights(ours: LongformerAttention, theirs: HFLongformerAttention) -> None:
    """Copy ours into HF's q/k/v (sliding and global; biases zeroed) and the output projection."""
    pairs = [(ours.qkv, (theirs.attn.query, theirs.attn.key, theirs.attn.value))]
    if ours.qkv_global is not None:
        pairs.append((ours.qkv_global, (theirs.attn.query_global, theirs.attn.key_global, theirs.attn.value_global)))
    with torch.no_grad():
        for fused, linears in pairs:
            for w, lin in zip(fused.weight.chunk(3, dim=0), linears):
                lin.weight.copy_(w)
                lin.bias.zero_()
        theirs.out.weight.copy_(ours.out.weight)


def matched(d_model: int, n_heads: int, attention_window: int = WINDOW, n_global: int = N_GLOBAL,
            seed: int = 0) -> tuple[LongformerAttention, HFLongformerAttention]:
    """(ours, theirs) computing the same function: HF's window w is ours with window_size = w + 1."""
    torch.manual_seed(seed)
    ours = LongformerAttention(d_model, n_heads, d_qkv=d_model, dropout=0.0, window_size=attention_window + 1,
                               n_global=n_global)
    theirs = HFLongformerAttention(d_model, n_heads, attention_window, n_global)
    match_weights(ours, theirs)
    return ours, theirs


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D); ``length`` is unused (both take any L); no dropout."""
    return matched(d_model, n_heads, seed=seed)
