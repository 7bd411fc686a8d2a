"""Our ``BigBirdAttention`` beside Hugging Face's ``BigBirdBlockSparseAttention``, weights and random blocks matched.

LRA's settings: block size 64, 3 random blocks, q/k/v/out without bias. Hugging Face's module holds q/k/v
only (its output projection sits in ``BigBirdSelfOutput`` with a LayerNorm), so ``theirs`` wraps it with our
bias-free output projection, and builds the masks ``BigBirdModel`` would pass for an unpadded batch.

The random blocks: Hugging Face draws them with numpy on every forward, under ``np.random.seed(seed)``, and
only in training mode (in eval mode every random block is block 0). ``theirs`` therefore keeps its attention in
training mode (it has no dropout, so nothing else changes) and ``match_random_blocks`` recomputes the table it
draws, through its own generators, and gives it to ours. Its layout is the batch's (no extra pad block), so
ours is built with ``extra_pad_block=False`` and ``max_length=length``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lra_bench.models.attention.bigbird import BigBirdAttention

REFERENCE = "transformers==4.46.3"
BLOCK_SIZE = 64  # LRA's bigbird.py _DEFAULT_BLOCK_SIZE
NUM_RAND_BLOCKS = 3  # LRA's BigBirdAttention default


class HFBlockSparse(nn.Module):
    """x (B, L, D) -> (B, L, D): Hugging Face's block-sparse attention, then a bias-free output projection."""

    def __init__(self, attn: nn.Module, d_qkv: int, d_model: int):
        super().__init__()
        self.attn = attn
        self.out = nn.Linear(d_qkv, d_model, bias=False)

    def train(self, mode: bool = True) -> HFBlockSparse:
        super().train(mode)
        self.attn.train(True)  # eval mode would drop the random blocks (all set to block 0)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.models.big_bird.modeling_big_bird import BigBirdModel

        ones = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(ones, self.attn.block_size)
        return self.out(self.attn(x, band, from_mask, to_mask, blocked, blocked)[0])


def hf_random_blocks(attn: nn.Module, length: int) -> torch.Tensor:
    """The (H, N_b - 2, r) table ``attn`` (training mode) draws for an unpadded length-``length`` batch:
    the calls of ``bigbird_block_sparse_attention`` after its ``np.random.seed(self.seed)``."""
    b, r, H = attn.block_size, attn.num_random_blocks, attn.num_attention_heads
    n_blocks = length // b
    np.random.seed(attn.seed)
    if length in (1024, 3072, 4096):  # Hugging Face's "old plans used in paper"
        table = [attn._bigbird_block_rand_mask(attn.max_seqlen, attn.max_seqlen, b, b, r, last_idx=1024)[: n_blocks - 2]
                 for _ in range(H)]
    else:
        plan, plan_r = attn._get_rand_attn_plan(length, b, r)
        table = attn._bigbird_block_rand_mask_with_head(
            from_seq_length=length, to_seq_length=length, from_block_size=b, to_block_size=b, num_heads=H,
            plan_from_length=plan, plan_num_rand_blocks=plan_r)
    return torch.from_numpy(np.stack(table).astype(np.int64))


def match_weights(ours: BigBirdAttention, theirs: HFBlockSparse) -> None:
    """Copy our q/k/v/out weights into Hugging Face's module and our output projection."""
    with torch.no_grad():
        theirs.attn.query.weight.copy_(ours.query.weight)
        theirs.attn.key.weight.copy_(ours.key.weight)
        theirs.attn.value.weight.copy_(ours.value.weight)
        theirs.out.weight.copy_(ours.out.weight)


def build(length: int, d_model: int, n_heads: int, seed: int = 0,
          block_size: int = BLOCK_SIZE, num_rand_blocks: int = NUM_RAND_BLOCKS) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs) mapping x (B, L, D) -> (B, L, D) for L = ``length`` (a multiple of ``block_size``)."""
    from transformers import BigBirdConfig
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

    if length % block_size:
        raise ValueError(f"Hugging Face's block-sparse attention needs a multiple of {block_size}, got {length}")
    torch.manual_seed(seed)
    ours = BigBirdAttention(d_model, n_heads, d_model, max_length=length, block_size=block_size,
                            num_rand_blocks=num_rand_blocks, extra_pad_block=False, seed=seed)
    config = BigBirdConfig(hidden_size=d_model, num_attention_heads=n_heads, block_size=block_size,
                           num_random_blocks=num_rand_blocks, use_bias=False, max_position_embeddings=length,
                           attention_type="block_sparse")
    theirs = HFBlockSparse(BigBirdBlockSparseAttention(config, seed=seed), d_model, d_model).train()
    match_weights(ours, theirs)
    ours.use_random_blocks(hf_random_blocks(theirs.attn, length))
    return ours, theirs
