"""Local attention: the local-attention package's blocks, LRA's strided groups, padding, the backbone, the presets."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lra_bench.benchmarks.references.local import PackageLocalAttention, build, match_weights
from lra_bench.models.attention.local import LocalAttention
from tests.attention_checks import assert_encoder_trains_at_an_odd_length, assert_padding_and_a_hole_change_nothing
from tests.conftest import compose_config

D, H = 16, 2


def make(grouping: str, block_size: int = 5, max_length: int | None = 40) -> LocalAttention:
    torch.manual_seed(0)
    m = LocalAttention(D, H, d_qkv=D, dropout=0.0, block_size=block_size, grouping=grouping, max_length=max_length)
    return m.double().eval()


def groups_of(L: int, block_size: int, grouping: str, max_length: int) -> torch.Tensor:
    """(L,) group id of each position. Strided, from LRA's reshape (Lp,) -> (T, S) attended along T: position
    t * S + s sits in column s, so its group is position mod S, with Lp = S * T padded as LRA pads max_length."""
    if grouping == "contiguous":
        return torch.arange(L) // block_size
    S = max_length // block_size + 1  # LRA pads by block_size - L % block_size: always at least one position
    return torch.arange(L) % S


def dense_attention(m: LocalAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(E)) V over an explicit (B, L, L) pattern, through the module's projections."""
    B, L, _ = x.shape
    q, k, v = m.qkv(x).view(B, L, 3, H, -1).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * q.size(-1) ** -0.5
    y = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1) @ v
    return m.out(y.transpose(1, 2).reshape(B, L, -1))


def test_contiguous_blocks_match_the_local_attention_package() -> None:
    """Package: window_size = block, look_backward = look_forward = 0; odd length, right padding masked. float64."""
    ours, theirs = make("contiguous"), PackageLocalAttention(D, H, D, block_size=5).double().eval()
    match_weights(ours, theirs)
    x = torch.randn(2, 23, D, dtype=torch.float64)
    mask = torch.ones(2, 23, dtype=torch.bool)
    mask[1, 17:] = False
    torch.testing.assert_close(ours(x, mask)[mask], theirs(x, mask)[mask], atol=1e-12, rtol=1e-12)


def test_the_benchmark_pair_computes_the_same_function() -> None:
    """references/local.build at LRA's block 50: same outputs in float32 at a length that is not a multiple."""
    ours, theirs = build(length=130, d_model=D, n_heads=H)
    x = torch.randn(1, 130, D)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_strided_groups_are_the_package_blocks_on_lra_s_reshaped_order() -> None:
    """LRA's reshape (Lp,) -> (T, S) makes column s a group: permuting positions into that order and running the
    package's contiguous blocks gives our strided output. float64."""
    T, L, max_length = 5, 23, 30
    ours, theirs = make("strided", T, max_length), PackageLocalAttention(D, H, D, block_size=T).double().eval()
    match_weights(ours, theirs)
    S = max_length // T + 1
    order = torch.arange(S * T).view(T, S).t().flatten()  # group after group
    x = torch.randn(2, L, D, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(2, S * T - L, D, dtype=torch.float64)], dim=1)
    theirs_out = theirs(padded[:, order], (order < L).expand(2, -1))[:, order.argsort()][:, :L]
    torch.testing.assert_close(ours(x), theirs_out, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_equals_full_attention_masked_to_the_groups(grouping: str) -> None:
    """The quadratic formula with the explicit pattern (same group and key attendable), float64."""
    m = make(grouping, block_size=4, max_length=30)
    x = torch.randn(2, 27, D, dtype=torch.float64)
    mask = torch.ones(2, 27, dtype=torch.bool)
    mask[1, 20:] = False
    g = groups_of(27, 4, grouping, 30)
    allowed = (g[:, None] == g[None, :]) & mask[:, None, :]
    torch.testing.assert_close(m(x, mask)[mask], dense_attention(m, x, allowed)[mask], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_an_output_changes_only_with_the_positions_of_its_group(grouping: str) -> None:
    """The pattern really is sparse: changing position j moves outputs exactly at j's group."""
    m = make(grouping, block_size=4, max_length=30)
    x = torch.randn(1, 27, D, dtype=torch.float64)
    y = x.clone()
    y[0, 9] += torch.randn(D, dtype=torch.float64)
    moved = (m(x) - m(y)).abs().amax(-1)[0] > 1e-12
    g = groups_of(27, 4, grouping, 30)
    assert torch.equal(moved, g == g[9]) and moved.sum() == 4  # a whole group of block_size positions


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_padding_amount_values_and_a_hole_change_nothing_at_attended_positions(grouping: str) -> None:
    assert_padding_and_a_hole_change_nothing(make(grouping, block_size=4, max_length=40), D, hole=6, pad=13)


def test_a_masked_query_gets_the_average_of_its_group_as_lra() -> None:
    """LRA's -1e10 bias on a masked query's whole row is a uniform average over its block's values."""
    m = make("contiguous", block_size=4)
    x = torch.randn(1, 12, D, dtype=torch.float64)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 5] = False
    q, k, v = m.qkv(x).view(1, 12, 3, H, -1).permute(2, 0, 3, 1, 4)
    expected = m.out(v[:, :, 4:8].mean(dim=2).reshape(1, -1))
    torch.testing.assert_close(m(x, mask)[0, 5], expected[0], atol=1e-12, rtol=1e-12)


def test_strided_grouping_needs_max_length_and_rejects_longer_inputs() -> None:
    with pytest.raises(ValueError, match="max_length"):
        LocalAttention(D, H, grouping="strided")
    with pytest.raises(ValueError, match="max_length=10"):
        LocalAttention(D, H, block_size=4, grouping="strided", max_length=10)(torch.randn(1, 11, D))


@pytest.mark.parametrize("grouping", ["contiguous", "strided"])
def test_backbone_trains_at_an_odd_length(grouping: str) -> None:
    """TransformerEncoder with the mechanism: forward and backward at a length that is not a block multiple."""
    assert_encoder_trains_at_an_odd_length(partial(LocalAttention, block_size=5, grouping=grouping),
                                           d_model=D, n_heads=H, length=23, short=17, max_length=40)


# task: layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, max length, head hidden,
#       block size (lra_benchmarks/<task>/configs/local_base.py on the task's base config)
LOCAL = {
    "listops": (6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 2001, 2048, 50),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 4001, 1024, 50),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", 4000, [512, 256], 50),
    "image": (1, 128, 2, 64, 128, 0.3, 0.2, "mean", "learned", 1024, 128, 64),
    "pathfinder": (2, 64, 4, 32, 64, 0.1, 0.1, "mean", "sinusoidal", 1024, 64, 64),
    "pathx": (2, 64, 4, 32, 64, 0.1, 0.1, "mean", "learned", 16384, 64, 64),
}


@pytest.mark.parametrize("task", list(LOCAL))
def test_local_presets_hold_lra_s_settings(task: str) -> None:
    (layers, emb, heads, qkv, mlp, drop, attn_drop, pool, pos, max_len, head, block) = LOCAL[task]
    cfg = compose_config([f"experiment=lra/local-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    net, bb = cfg.model.net, cfg.model.net.backbone
    assert cfg.model.name == "local" and bb.attention._target_ == "lra_bench.models.attention.local.LocalAttention"
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling) == (drop, attn_drop, pool)
    assert (bb.positions, bb.max_length) == (pos, max_len)
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    assert (bb.attention.block_size, bb.attention.lra_code, net.lra_code) == (block, False, False)  # the switch's
    assert "grouping" not in bb.attention  # contiguous by default, LRA's strided groups with lra_code=true
