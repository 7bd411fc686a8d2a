"""BigBird block-sparse attention: Hugging Face parity, the explicit pattern, LRA's random table, padding, presets."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from lra_bench.benchmarks.references.bigbird import build
from lra_bench.models.attention.bigbird import BigBirdAttention, lra_random_blocks
from lra_bench.models.attention.transformer import TransformerEncoder
from tests.attention_checks import assert_holes_do_not_reach_other_positions, assert_padding_is_ignored
from tests.conftest import compose_config


def small(max_length: int | None = 40, **kw) -> BigBirdAttention:
    torch.manual_seed(0)
    args = dict(d_model=8, n_heads=2, d_qkv=8, max_length=max_length, block_size=4, num_rand_blocks=2, seed=3)
    return BigBirdAttention(**{**args, **kw}).double().eval()


def pattern_counts(table: torch.Tensor, n_layout: int, n: int, b: int) -> torch.Tensor:
    """(H, n b, n b): how many times each key is listed for each query, written from the definition."""
    H = table.size(0)
    counts = torch.zeros(H, n, n, dtype=torch.float64)
    for h in range(H):
        for row in range(n):
            if row in (0, n_layout - 1):
                counts[h, row] = 1.0
                continue
            for col in {0, row - 1, row, row + 1, n_layout - 1}:
                if col < n:
                    counts[h, row, col] += 1
            for col in table[h, row - 1].tolist():
                if col < n:
                    counts[h, row, col] += 1
    return torch.kron(counts, torch.ones(b, b, dtype=torch.float64))


def masked_full_attention(attn: BigBirdAttention, x: torch.Tensor, mask: torch.Tensor,
                          counts: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(E) + log(count)) V over the allowed, valid keys; masked queries give 0."""
    B, L, _ = x.shape
    H = attn.n_heads
    q, k, v = (p(x).view(B, L, H, -1).transpose(1, 2) for p in (attn.query, attn.key, attn.value))
    c = counts[None, :, :L, :L] * mask[:, None, None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)) + torch.log(c)
    y = torch.softmax(scores, dim=-1) @ v * mask[:, None, :, None]
    return attn.out(y.transpose(1, 2).reshape(B, L, -1))


@pytest.mark.parametrize("length", [1024, 768])
def test_matches_hugging_face_block_sparse_with_its_random_blocks(length: int) -> None:
    """1024 takes Hugging Face's "paper plan" table, 768 its per-head plan; outputs and input gradients agree."""
    ours, theirs = build(length, d_model=16, n_heads=2, seed=1)
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, length, 16, dtype=torch.float64, requires_grad=True)
    y_ours = ours(x, None)
    (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x)
    y_theirs = theirs(x)
    (g_theirs,) = torch.autograd.grad(y_theirs.square().sum(), x)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-10, rtol=1e-10)


def test_the_random_blocks_matter_in_the_hugging_face_comparison() -> None:
    """Guard for the parity test: with our own (LRA) table instead of Hugging Face's, the outputs differ."""
    ours, theirs = build(1024, d_model=16, n_heads=2, seed=1)
    ours.use_random_blocks(lra_random_blocks(16, 64, 3, 2, seed=5))
    x = torch.randn(1, 1024, 16)
    assert not torch.allclose(ours(x, None), theirs(x), atol=1e-4)


@pytest.mark.parametrize("extra_pad_block", [True, False])
@pytest.mark.parametrize("max_length, length", [(40, 40), (40, 37), (40, 25), (40, 9), (7, 7), (11, 11), (12, 10)])
def test_equals_masked_full_attention_with_the_explicit_pattern(max_length: int, length: int,
                                                                extra_pad_block: bool) -> None:
    """Every real query sees exactly its window, global and random blocks, with holes and padding in the mask;
    also layouts of 2 to 4 blocks, where rows share blocks and random slots stay empty."""
    attn = small(max_length=max_length, extra_pad_block=extra_pad_block, random_span=None)
    n_layout = max_length // 4 + 1 if extra_pad_block else -(-max_length // 4)
    n = -(-length // 4)
    x = torch.randn(2, length, 8, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length * 2 // 3 :] = False  # right padding
    mask[0, 2] = mask[0, length // 2] = False  # holes
    counts = pattern_counts(attn.random_blocks, n_layout, n, 4)
    expected = masked_full_attention(attn, x, mask, counts)
    torch.testing.assert_close(attn(x, mask), expected, atol=1e-12, rtol=1e-10)


def test_lra_layout_makes_the_last_block_of_a_block_multiple_length_pad() -> None:
    """max_length 40 = 10 blocks of 4: LRA adds an 11th block of pads, so block 9 is not global (it does not see
    a block outside its window and random blocks); with Hugging Face's layout block 9 is the last, global one."""
    lra, hf = small(extra_pad_block=True), small(extra_pad_block=False)
    assert lra.random_blocks.shape[1] + 2 == 11 and hf.random_blocks.shape[1] + 2 == 10
    far = next(j for j in range(2, 8) if j not in lra.random_blocks[:, 8].flatten().tolist())
    x = torch.randn(1, 40, 8, dtype=torch.float64)
    y = x.clone()
    y[0, 4 * far : 4 * far + 4] += torch.randn(4, 8, dtype=torch.float64)
    torch.testing.assert_close(lra(y, None)[0, 36:], lra(x, None)[0, 36:], atol=1e-12, rtol=1e-10)
    assert not torch.allclose(hf(y, None)[0, 36:], hf(x, None)[0, 36:])


def test_random_table_follows_lra_rules() -> None:
    """Per row: r distinct blocks, none in the window or global, all within the first random_span tokens."""
    b, r, n_blocks = 16, 3, 70
    table = lra_random_blocks(n_blocks, b, r, n_heads=4, seed=0, random_span=1024)
    assert table.shape == (4, n_blocks - 2, r)
    last = 1024 // b - 1
    for h in range(4):
        for i in range(1, n_blocks - 1):
            row = table[h, i - 1].tolist()
            assert len(set(row)) == r
            assert not set(row) & {0, i - 1, i, i + 1, n_blocks - 1}
            assert max(row) <= last
    assert not torch.equal(table[0], table[1]), "heads draw their own blocks"
    assert torch.equal(lra_random_blocks(n_blocks, b, r, 4, seed=0), table), "a seed fixes the table"


def test_random_table_is_the_lra_generator_shared_with_hugging_face() -> None:
    """Hugging Face's _bigbird_block_rand_mask is LRA's get_block_rand_mask except the last two rows (its
    "Missing -3/-4" comments): under one numpy seed the first head's other rows are the same draws."""
    from transformers import BigBirdConfig
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

    b, r, length = 16, 3, 1024
    hf = BigBirdBlockSparseAttention(BigBirdConfig(hidden_size=8, num_attention_heads=2, block_size=b,
                                                   num_random_blocks=r, max_position_embeddings=length)).train()
    np.random.seed(7)
    theirs = hf._bigbird_block_rand_mask(length, length, b, b, r, last_idx=1024)
    ours = lra_random_blocks(length // b, b, r, n_heads=1, seed=7)[0]
    n_rows = length // b - 2
    assert np.array_equal(ours[: n_rows - 2].numpy(), theirs[: n_rows - 2])


def test_short_layouts_leave_unfillable_random_slots_empty() -> None:
    table = lra_random_blocks(5, 4, 3, n_heads=1, seed=0, random_span=None)
    assert (table == 5).any(), "5 blocks have too few candidates for 3 random blocks per row"
    attn = small(max_length=20, num_rand_blocks=3)
    assert torch.isfinite(attn(torch.randn(1, 20, 8, dtype=torch.float64), None)).all()


def test_real_positions_ignore_extra_padding_and_pad_values() -> None:
    # pads within the last block, and across several blocks
    assert_padding_is_ignored(small(), 8, length=21, pads=(3, 11, 19), scale=100, rtol=1e-10)


def test_masked_holes_do_not_reach_other_positions() -> None:
    attn = small()
    x, _, mask = assert_holes_do_not_reach_other_positions(attn, 8, batch=2, length=30, holes=[1, 7, 8, 22], scale=50,
                                                           rtol=1e-10)
    assert (attn(x, mask)[~mask] == 0).all(), "LRA zeroes the attention output at masked queries"


def test_the_pattern_is_sparse() -> None:
    """A middle query changes with keys in its blocks and not with keys outside them."""
    attn = small(max_length=64, random_span=None)
    table = attn.random_blocks  # (H, N_b - 2, r)
    row = 8  # query block
    listed = {0, row - 1, row, row + 1, 64 // 4} | set(table[:, row - 1].flatten().tolist())
    outside = [j for j in range(16) if j not in listed]
    assert outside, "the test needs a block no head lists"
    x = torch.randn(1, 64, 8, dtype=torch.float64)
    base = attn(x, None)[0, 4 * row : 4 * row + 4]
    for j, should_change in ((outside[0], False), (row - 1, True), (table[0, row - 1, 0].item(), True)):
        y = x.clone()
        y[0, 4 * j + 1] += torch.randn(8, dtype=torch.float64)
        changed = not torch.allclose(attn(y, None)[0, 4 * row : 4 * row + 4], base, atol=1e-12)
        assert changed == should_change, f"key block {j}"


def test_global_blocks_see_everything_and_are_seen_by_everyone() -> None:
    attn = small(max_length=64, random_span=None)
    x = torch.randn(1, 64, 8, dtype=torch.float64)
    base = attn(x, None)[0]
    y = x.clone()
    y[0, 45] += torch.randn(8, dtype=torch.float64)  # a key far from block 0
    assert not torch.allclose(attn(y, None)[0, :4], base[:4]), "block 0 attends to every key"
    z = x.clone()
    z[0, 1] += torch.randn(8, dtype=torch.float64)  # a key of block 0
    assert not torch.allclose(attn(z, None)[0, 40:44], base[40:44]), "every query attends to block 0"


def test_longer_input_than_max_length_names_the_option() -> None:
    with pytest.raises(ValueError, match="max_length"):
        small(max_length=16)(torch.randn(1, 20, 8, dtype=torch.float64), None)


def test_encoder_with_bigbird_trains_at_an_odd_length() -> None:
    torch.manual_seed(0)
    attention = functools.partial(BigBirdAttention, block_size=4, num_rand_blocks=2)
    model = TransformerEncoder(d_model=16, n_layers=2, n_heads=2, d_ff=32, max_length=64, attention=attention)
    assert model.layers[0].attn.seed != model.layers[1].attn.seed, "layers draw their own random blocks"
    x = torch.randn(3, 47, 16)
    out = model(x, torch.tensor([47, 30, 5]))
    out.square().mean().backward()
    assert out.shape == (3, 47, 16) and (out[1, 30:] == 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "attn.query" in n)


# task: (block size, layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, head hidden)
LRA_BIGBIRD = {
    "listops": (64, 6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 2048),
    "text": (64, 4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 1024),
    "retrieval": (64, 4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", [512, 256]),
    "image": (64, 1, 128, 4, 64, 128, 0.3, 0.2, "cls", "learned", 128),
    "pathfinder": (64, 4, 64, 2, 32, 64, 0.2, 0.1, "mean", "sinusoidal", 64),
    "pathx": (64, 4, 64, 2, 32, 64, 0.2, 0.1, "mean", "learned", 64),
}


@pytest.mark.parametrize("task", list(LRA_BIGBIRD))
def test_bigbird_presets_hold_the_lra_settings(task: str) -> None:
    block, layers, emb, heads, qkv, mlp, drop, attn_drop, pool, pos, head = LRA_BIGBIRD[task]
    cfg = compose_config([f"experiment=lra/bigbird-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    net, bb = cfg.model.net, cfg.model.net.backbone
    assert cfg.model.name == "bigbird"
    assert bb.attention._target_ == "lra_bench.models.attention.bigbird.BigBirdAttention"
    assert (bb.attention.block_size, bb.attention.num_rand_blocks, bb.attention.random_span) == (block, 3, 1024)
    assert bb.attention.extra_pad_block is True
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling, bb.positions) == (drop, attn_drop, pool, pos)
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    assert net.lra_code is False and bb.attention.lra_code is False  # the switch's default: pixel 0 is data
    transformer = compose_config([f"experiment=lra/transformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    assert cfg.optimizer == transformer.optimizer and cfg.scheduler == transformer.scheduler
    assert cfg.trainer.max_steps == transformer.trainer.max_steps and cfg.task.batch_size == transformer.task.batch_size
    if cfg.task.vocab_size is None:
        cfg.task.vocab_size = 256
    backbone = instantiate(cfg.model.net).backbone
    assert all(isinstance(layer.attn, BigBirdAttention) for layer in backbone.layers)
