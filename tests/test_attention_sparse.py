"""Sparse Transformer attention: LRA's fixed pattern by hand, masked full attention, chunking, padding, the backbone,
the presets. No maintained package implements LRA's pattern, so the reference is the explicit (L, L) formula."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lra_bench.models.attention.sparse import SparseAttention, pattern_mask
from tests.attention_checks import assert_encoder_trains_at_an_odd_length, assert_padding_and_a_hole_change_nothing
from tests.conftest import compose_config

D, H = 16, 2


def make(block_size: int = 4, c: int = 1, causal: bool = True, cls_token: bool = False,
         chunk_size: int = 4096) -> SparseAttention:
    torch.manual_seed(0)
    return SparseAttention(D, H, d_qkv=D, dropout=0.0, block_size=block_size, c=c, causal=causal, cls_token=cls_token,
                           chunk_size=chunk_size).double().eval()


def dense_attention(m: SparseAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(E)) V over an explicit (B, L, L) pattern, through the module's projections."""
    B, L, _ = x.shape
    q, k, v = m.qkv(x).view(B, L, 3, H, -1).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * q.size(-1) ** -0.5
    y = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1) @ v
    return m.out(y.transpose(1, 2).reshape(B, L, -1))


def test_the_pattern_is_lra_s_fixed1_or_fixed2_causal_by_hand() -> None:
    """build_mask(8, [Fixed1Pattern(4), Fixed2Pattern(4, c=1)]): own block, or j mod 4 in {0, 3}; and j <= i."""
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 0, 0, 1, 1, 0, 0, 0],  # block 1: its own keys so far, and keys 0 and 3 (summaries of block 0)
        [1, 0, 0, 1, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 1, 1, 0],
        [1, 0, 0, 1, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(pattern_mask(8, block_size=4, c=1), expected)
    with_cls = pattern_mask(9, block_size=4, c=1, cls_token=True)  # use_cls_token: row and column 0 all ones
    assert with_cls[0].all() and with_cls[:, 0].all() and torch.equal(with_cls[1:, 1:], expected)
    bidirectional = pattern_mask(8, block_size=4, c=1, causal=False)
    assert torch.equal(bidirectional[1], torch.tensor([1, 1, 1, 1, 1, 0, 0, 1], dtype=torch.bool))


@pytest.mark.parametrize(("block_size", "c", "causal", "cls_token", "L"), [
    (4, 1, True, False, 23), (4, 1, True, True, 23), (5, 2, False, False, 26), (5, 2, False, True, 31),
    (3, 5, True, True, 10), (50, 10, True, True, 181),
])
def test_equals_full_attention_masked_to_the_pattern(
    block_size: int, c: int, causal: bool, cls_token: bool, L: int
) -> None:
    m = make(block_size, c, causal, cls_token)
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, L - 5 :] = False
    allowed = pattern_mask(L, block_size, c, causal, cls_token) & mask[:, None, :]
    torch.testing.assert_close(m(x, mask)[mask], dense_attention(m, x, allowed)[mask], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_chunks_recomputed_in_backward_give_the_same_values_and_gradients(causal: bool) -> None:
    """chunk_size 8 (2 blocks a chunk, checkpointed) against one chunk: outputs and input gradients, float64."""
    whole, chunked = make(4, 1, causal, cls_token=True), make(4, 1, causal, cls_token=True, chunk_size=8)
    x = torch.randn(2, 37, D, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    y_whole, y_chunked = whole(x, mask), chunked(x, mask)
    torch.testing.assert_close(y_chunked[mask], y_whole[mask], atol=1e-12, rtol=1e-12)
    g_whole, = torch.autograd.grad(y_whole[mask].square().sum(), x)
    g_chunked, = torch.autograd.grad(y_chunked[mask].square().sum(), x)
    torch.testing.assert_close(g_chunked, g_whole, atol=1e-12, rtol=1e-12)


def test_a_recomputed_chunk_replays_its_attention_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training with dropout: gradients through the checkpointed chunks equal those of the same chunks kept in
    memory (same seed), so the recomputation draws the same dropout masks."""
    import lra_bench.models.attention.sparse as sparse

    m = make(4, 1, cls_token=True, chunk_size=8)
    m.dropout = 0.5
    m.train()
    x = torch.randn(2, 37, D, dtype=torch.float64, requires_grad=True)

    def output_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        y = m(x)
        return y, torch.autograd.grad(y.square().sum(), x)[0]

    y_recomputed, g_recomputed = output_and_gradient()
    monkeypatch.setattr(sparse, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
    y_kept, g_kept = output_and_gradient()
    torch.testing.assert_close(y_recomputed, y_kept, atol=0, rtol=0)
    torch.testing.assert_close(g_recomputed, g_kept, atol=1e-12, rtol=1e-12)


def test_an_output_changes_only_with_the_positions_of_its_pattern() -> None:
    """The pattern really is sparse: changing key j moves exactly the queries whose row of the pattern holds j."""
    m = make(4, 1)
    x = torch.randn(1, 24, D, dtype=torch.float64)
    pattern = pattern_mask(24, 4, 1)
    for j in (5, 7, 22):  # a plain key, a summary key (7 mod 4 = 3), one near the end
        y = x.clone()
        y[0, j] += torch.randn(D, dtype=torch.float64)
        moved = (m(x) - m(y)).abs().amax(-1)[0] > 1e-12
        assert torch.equal(moved, pattern[:, j]), j


def test_padding_amount_values_and_a_hole_change_nothing_at_attended_positions() -> None:
    # position 8 is a summary key (block 1, offset 3)
    assert_padding_and_a_hole_change_nothing(make(4, 1, cls_token=True), D, hole=8, pad=12)


def test_a_masked_query_gets_the_average_of_all_values_as_lra() -> None:
    """LRA's -1e10 bias on a masked query's whole (L, L) row is a uniform average over every value."""
    m = make(4, 1)
    x = torch.randn(1, 12, D, dtype=torch.float64)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 5] = False
    v = m.qkv(x).view(1, 12, 3, H, -1)[:, :, 2]
    torch.testing.assert_close(m(x, mask)[0, 5], m.out(v.mean(dim=1).reshape(-1)), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls_token", [False, True])
def test_backbone_trains_at_an_odd_length(cls_token: bool) -> None:
    attention = partial(SparseAttention, block_size=4, c=1, cls_token=cls_token, chunk_size=8)
    assert_encoder_trains_at_an_odd_length(attention, d_model=D, n_heads=H, length=23, short=17, max_length=40)


# task: layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, max length, head hidden,
#       cls_token (use_cls_token) (lra_benchmarks/<task>/configs/sparse_transformer_base.py). Pixel 0 is data by
#       default; LRA's `inputs > 0` mask comes with the top-level lra_code=true, not from a preset.
SPARSE = {
    "listops": (6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 2001, 2048, True),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 4001, 1024, True),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", 4000, [512, 256], True),
    "image": (1, 128, 8, 64, 128, 0.3, 0.2, "cls", "learned", 1025, 128, True),
    "pathfinder": (1, 32, 8, 16, 32, 0.2, 0.1, "mean", "sinusoidal", 1024, 32, False),
    "pathx": (1, 32, 8, 16, 32, 0.2, 0.1, "mean", "learned", 16384, 32, False),
}


@pytest.mark.parametrize("task", list(SPARSE))
def test_sparse_transformer_presets_hold_lra_s_settings(task: str) -> None:
    (layers, emb, heads, qkv, mlp, drop, attn_drop, pool, pos, max_len, head, cls_token) = SPARSE[task]
    cfg = compose_config([f"experiment=lra/sparse_transformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    net, bb = cfg.model.net, cfg.model.net.backbone
    assert cfg.model.name == "sparse_transformer"
    assert bb.attention._target_ == "lra_bench.models.attention.sparse.SparseAttention"
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling) == (drop, attn_drop, pool)
    assert (bb.positions, bb.max_length) == (pos, max_len)
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    att = bb.attention
    assert (att.block_size, att.c, att.causal, att.cls_token) == (50, 10, True, cls_token)
    assert net.lra_code is False  # the switch's default (LRA's inputs > 0 mask only with lra_code=true)
