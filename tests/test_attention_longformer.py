"""Longformer attention: HF's LongformerSelfAttention, LRA's windowed formula, padding, the backbone, the presets."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lra_bench.benchmarks.references.longformer import build, matched
from lra_bench.models.attention.longformer import LongformerAttention
from tests.attention_checks import assert_encoder_trains_at_an_odd_length, assert_padding_and_a_hole_change_nothing
from tests.conftest import compose_config

D, H = 16, 2


def make(window_size: int, n_global: int = 0) -> LongformerAttention:
    torch.manual_seed(0)
    return LongformerAttention(D, H, d_qkv=D, dropout=0.0, window_size=window_size, n_global=n_global).double().eval()


def dense_longformer(m: LongformerAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LRA's longformer_attention.py written out: (L, L) window mask (left side counting the query) OR global rows and
    columns, AND the key mask; global rows recomputed with the global projections over every key."""
    B, L, _ = x.shape
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    right = m.window_size // 2
    left = m.window_size - right
    is_global = torch.arange(L) < m.n_global
    pattern = ((j - i > -left) & (j - i <= right)) | is_global[None, :] | is_global[:, None]

    def softmax_attention(qkv: torch.nn.Linear, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv(x).view(B, L, 3, H, -1).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * q.size(-1) ** -0.5
        return torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1) @ v

    y = softmax_attention(m.qkv, pattern & mask[:, None, :])
    if m.n_global:
        y[:, :, : m.n_global] = softmax_attention(m.qkv_global, mask[:, None, :].expand(B, L, L))[:, :, : m.n_global]
    return m.out(y.transpose(1, 2).reshape(B, L, -1))


@pytest.mark.parametrize(("attention_window", "n_global"), [(4, 0), (6, 1), (8, 3)])
def test_matches_hugging_face_longformer_self_attention(attention_window: int, n_global: int) -> None:
    """HF window w (w/2 each side) is ours with window_size w + 1; global tokens, odd length, right padding. HF takes
    its softmax in float32 even for float64 inputs, hence 1e-6."""
    ours, theirs = matched(D, H, attention_window=attention_window, n_global=n_global)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x = torch.randn(2, 29, D, dtype=torch.float64)
    mask = torch.ones(2, 29, dtype=torch.bool)
    mask[1, 21:] = False
    torch.testing.assert_close(ours(x, mask)[mask], theirs(x, mask)[mask], atol=1e-6, rtol=1e-6)


def test_the_benchmark_pair_computes_the_same_function() -> None:
    """references/longformer.build (window 512, a global first token), float32 at a length HF must pad."""
    ours, theirs = build(length=600, d_model=D, n_heads=H)
    x = torch.randn(1, 600, D)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("window_size", "n_global", "L"),
                         [(8, 0, 27), (7, 0, 27), (5, 2, 30), (512, 0, 40), (1, 0, 9)])
def test_equals_lra_s_masked_full_attention(window_size: int, n_global: int, L: int) -> None:
    """The quadratic formula of LRA's code (even windows reach one further right), float64."""
    m = make(window_size, n_global)
    x = torch.randn(2, L, D, dtype=torch.float64)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, L - 6 :] = False
    torch.testing.assert_close(m(x, mask)[mask], dense_longformer(m, x, mask)[mask], atol=1e-12, rtol=1e-12)


def test_an_output_changes_only_with_the_positions_of_its_window() -> None:
    """window_size 6: 2 keys left of the query, 3 right (LRA's split); a change at j moves outputs j-3 .. j+2."""
    m = make(6)
    x = torch.randn(1, 30, D, dtype=torch.float64)
    y = x.clone()
    y[0, 15] += torch.randn(D, dtype=torch.float64)
    moved = (m(x) - m(y)).abs().amax(-1)[0] > 1e-12
    assert moved.nonzero().flatten().tolist() == [12, 13, 14, 15, 16, 17]


def test_a_global_token_sees_and_is_seen_by_every_position() -> None:
    m = make(4, n_global=1)
    x = torch.randn(1, 30, D, dtype=torch.float64)
    far = x.clone()
    far[0, 29] += torch.randn(D, dtype=torch.float64)
    assert (m(x)[0, 0] - m(far)[0, 0]).abs().max() > 1e-6  # the global token reads the last position
    first = x.clone()
    first[0, 0] += torch.randn(D, dtype=torch.float64)
    assert ((m(x) - m(first)).abs().amax(-1)[0] > 1e-12).all()  # and every position reads it


@pytest.mark.parametrize("n_global", [0, 2])
def test_padding_amount_values_and_a_hole_change_nothing_at_attended_positions(n_global: int) -> None:
    assert_padding_and_a_hole_change_nothing(make(6, n_global), D, hole=9, pad=11)


def test_a_masked_query_gets_the_average_of_all_values_as_lra() -> None:
    """LRA's -1e10 bias on a masked query's whole (L, L) row is a uniform average over every value."""
    m = make(4)
    x = torch.randn(1, 12, D, dtype=torch.float64)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 5] = False
    v = m.qkv(x).view(1, 12, 3, H, -1)[:, :, 2]
    torch.testing.assert_close(m(x, mask)[0, 5], m.out(v.mean(dim=1).reshape(-1)), atol=1e-12, rtol=1e-12)


def test_global_projections_exist_only_with_global_tokens() -> None:
    assert make(8).qkv_global is None and make(8, n_global=1).qkv_global is not None


@pytest.mark.parametrize("n_global", [0, 1])
def test_backbone_trains_at_an_odd_length(n_global: int) -> None:
    assert_encoder_trains_at_an_odd_length(partial(LongformerAttention, window_size=8, n_global=n_global),
                                           d_model=D, n_heads=H, length=23, short=17, max_length=40)


# task: layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, max length, head hidden
#       (lra_benchmarks/<task>/configs/longformer_base.py on the task's base config). Pixel 0 is data by default;
#       LRA's `inputs > 0` mask comes with the top-level lra_code=true, not from a preset.
LONGFORMER = {
    "listops": (6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 2001, 2048),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 4001, 1024),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", 4000, [512, 256]),
    "image": (4, 128, 4, 64, 128, 0.3, 0.2, "mean", "learned", 1024, 128),
    "pathfinder": (2, 32, 2, 16, 32, 0.1, 0.1, "mean", "sinusoidal", 1024, 32),
    "pathx": (2, 32, 2, 16, 32, 0.1, 0.1, "mean", "learned", 16384, 32),
}


@pytest.mark.parametrize("task", list(LONGFORMER))
def test_longformer_presets_hold_lra_s_settings(task: str) -> None:
    (layers, emb, heads, qkv, mlp, drop, attn_drop, pool, pos, max_len, head) = LONGFORMER[task]
    cfg = compose_config([f"experiment=lra/longformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    net, bb = cfg.model.net, cfg.model.net.backbone
    assert cfg.model.name == "longformer"
    assert bb.attention._target_ == "lra_bench.models.attention.longformer.LongformerAttention"
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling) == (drop, attn_drop, pool)
    assert (bb.positions, bb.max_length) == (pos, max_len)
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    assert (bb.attention.window_size, bb.attention.n_global, net.lra_code) == (512, 0, False)  # lra_code: the switch
