"""Linformer attention: the linformer package, the low-rank formula, padding, the backbone, the LRA presets."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from lra_bench.benchmarks.references.linformer import build
from lra_bench.models.attention.linformer import LinformerAttention
from tests.attention_checks import (assert_encoder_trains_at_an_odd_length, assert_holes_do_not_reach_other_positions,
                                    assert_nothing_quadratic_is_kept, assert_padding_is_ignored, compose,
                                    without_attention)


def make(share_kv: bool = True, k: int = 8, max_length: int = 40) -> LinformerAttention:
    torch.manual_seed(0)
    return LinformerAttention(d_model=12, n_heads=3, max_length=max_length, k=k, share_kv=share_kv).double().eval()


def low_rank_formula(attn: LinformerAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(Q (E K)^T / sqrt(E_h)) (F V) per head, with the masked rows of K and V zeroed: (B, L, D)."""
    B, L, _ = x.shape
    H = attn.n_heads
    E = attn.E[:, :L]
    Fm = E if attn.F is None else attn.F[:, :L]
    heads = lambda t: t.view(B, L, H, -1).transpose(1, 2)  # noqa: E731
    q, k, v = heads(attn.query(x)), heads(attn.key(x)), heads(attn.value(x))
    keep = mask[:, None, :, None].to(x.dtype)
    k_low, v_low = E @ (k * keep), Fm @ (v * keep)  # (B, H, k, E_h)
    w = torch.softmax(q @ k_low.transpose(-1, -2) / math.sqrt(q.size(-1)), dim=-1)
    return attn.out((w @ v_low).transpose(1, 2).reshape(B, L, -1))


def test_matches_the_linformer_package_with_matched_weights() -> None:
    """The bench pair: LRA's k = 16 with E = F given to the package's proj_k and proj_v (float64, to 1e-12)."""
    ours, theirs = build(length=64, d_model=32, n_heads=4)
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, 50, 32, dtype=torch.float64)  # shorter than the projection: both slice E to L
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("share_kv", [True, False])
def test_equals_softmax_of_queries_against_projected_keys(share_kv: bool) -> None:
    attn = make(share_kv)
    x = torch.randn(2, 23, 12, dtype=torch.float64)
    mask = torch.ones(2, 23, dtype=torch.bool)
    mask[0, 17:] = False  # length padding
    mask[1, 5] = False  # a hole
    torch.testing.assert_close(attn(x, mask), low_rank_formula(attn, x, mask), atol=1e-12, rtol=1e-12)
    full = torch.ones_like(mask)
    torch.testing.assert_close(attn(x, None), low_rank_formula(attn, x, full), atol=1e-12, rtol=1e-12)


def test_projection_is_shared_by_keys_and_values_and_sized_k_by_max_length() -> None:
    attn = LinformerAttention(d_model=8, n_heads=2, max_length=101)
    assert attn.E.shape == (16, 101) and attn.F is None  # LRA: one (max_len, 16) kernel for keys and values
    assert attn.E.abs().max() <= math.sqrt(6 / (101 + 16))  # xavier-uniform bound of LRA's kernel


def test_real_positions_ignore_the_amount_and_values_of_padding() -> None:
    assert_padding_is_ignored(make(), 12, length=17, pads=(3, 23), scale=1e3)


def test_a_masked_hole_does_not_reach_other_positions() -> None:
    attn = make()
    x, y, _ = assert_holes_do_not_reach_other_positions(attn, 12, batch=1, length=20, holes=[6], scale=1e3)
    assert not torch.allclose(attn(y, None)[0, 0], attn(x, None)[0, 0])  # unmasked, position 6 does matter


def test_backbone_runs_forward_and_backward_at_an_odd_length() -> None:
    enc = assert_encoder_trains_at_an_odd_length(partial(LinformerAttention, k=8))
    assert enc.layers[0].attn.E.grad[:, :37].abs().sum() > 0 and (enc.layers[0].attn.E.grad[:, 37:] == 0).all()


def test_input_longer_than_the_projection_names_the_option() -> None:
    with pytest.raises(ValueError, match="max_length"):
        make(max_length=10)(torch.zeros(1, 11, 12, dtype=torch.float64))


def test_no_length_squared_tensor_is_kept_at_16k() -> None:
    """Text sizes (D 256, 4 heads), L = 16,384, batch 1: every tensor saved for backward is O(L), not (L, L)."""
    assert_nothing_quadratic_is_kept(LinformerAttention(256, 4, max_length=16_384, d_qkv=256, dropout=0.1))


# --- presets: LRA's linformer_base.py of each task -------------------------------------------------------------

def build_net(cfg) -> torch.nn.Module:
    with open_dict(cfg):
        cfg.task.vocab_size = cfg.task.vocab_size or 256  # Retrieval's vocabulary comes from the data
    return instantiate(cfg.model.net)


@pytest.mark.parametrize("task", ["listops", "text", "retrieval"])
def test_presets_change_only_the_mechanism_where_lra_changes_only_model_type(task: str) -> None:
    """listops/text/matching linformer_base.py set model_type only (Text's low_rank_features is never read)."""
    cfg = compose(f"linformer-{task}")
    assert cfg.model.name == "linformer"
    assert without_attention(cfg) == without_attention(compose(f"transformer-{task}"))


# task: layers, emb, heads, qkv, mlp (= head hidden), dropout, attention dropout, pooling (LRA image configs)
LRA_IMAGE = {
    "image": (1, 128, 8, 64, 128, 0.3, 0.2, "cls"),  # cifar10/linformer_base.py on base_cifar10_config.py
    "pathfinder": (1, 32, 2, 16, 32, 0.2, 0.1, "mean"),  # pathfinder32/linformer_base.py
    "pathx": (1, 32, 2, 16, 32, 0.2, 0.1, "mean"),  # our Path-X rule: the Pathfinder model settings
}


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_presets_hold_lra_linformer_settings(task: str) -> None:
    cfg = compose(f"linformer-{task}")
    bb = cfg.model.net.backbone
    assert bb.attention._target_.endswith("LinformerAttention")
    assert (bb.attention.k, bb.attention.share_kv) == (16, True)
    net = build_net(cfg)
    assert all(layer.attn.E.shape == (16, bb.max_length) for layer in net.backbone.layers)
    if task in LRA_IMAGE:
        layers, emb, heads, qkv, mlp, drop, attn_drop, pool = LRA_IMAGE[task]
        assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
        assert (bb.dropout, bb.attn_dropout, cfg.model.net.pooling) == (drop, attn_drop, pool)
        assert cfg.model.net.head_hidden == mlp
    if task in ("image", "pathfinder", "pathx"):
        assert cfg.model.net.lra_code is False  # the switch's default: pixel 0 is data

