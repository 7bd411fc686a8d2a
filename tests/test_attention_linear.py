"""Linear Transformer attention: the quadratic form it factorises, padding, the backbone, the LRA presets."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from lra_bench.models.attention.linear import LinearAttention
from tests.attention_checks import (assert_encoder_trains_at_an_odd_length, assert_holes_do_not_reach_other_positions,
                                    assert_nothing_quadratic_is_kept, assert_padding_is_ignored, compose,
                                    without_attention)


def make(eps: float = 1e-6) -> LinearAttention:
    torch.manual_seed(0)
    return LinearAttention(d_model=12, n_heads=3, eps=eps).double().eval()


def quadratic_form(attn: LinearAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A = phi(Q) phi(K)^T with masked keys' columns zeroed, rows divided by their sum + eps, times V: (B, L, D)."""
    B, L, _ = x.shape
    q, k, v = attn.qkv(x).view(B, L, 3, attn.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    A = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)  # (B, H, L, L)
    A = A * mask[:, None, None, :].to(x.dtype)
    y = (A / (A.sum(-1, keepdim=True) + attn.eps)) @ v
    return attn.out(y.transpose(1, 2).reshape(B, L, -1))


def test_equals_the_explicit_quadratic_form() -> None:
    """Float64, to 1e-12: the (E, E) factorisation is exact, only summation order differs."""
    attn = make()
    x = torch.randn(2, 23, 12, dtype=torch.float64)
    mask = torch.ones(2, 23, dtype=torch.bool)
    mask[0, 15:] = False  # length padding
    mask[1, [2, 9]] = False  # holes
    torch.testing.assert_close(attn(x, mask), quadratic_form(attn, x, mask), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(attn(x, None), quadratic_form(attn, x, torch.ones_like(mask)), atol=1e-12, rtol=1e-12)


def test_rows_are_convex_combinations_of_values() -> None:
    """phi > 0, so (with eps 0) each output before the out projection is a weighted mean of the values."""
    attn = make(eps=0.0)
    torch.nn.init.eye_(attn.out.weight)
    with torch.no_grad():
        attn.qkv.weight[24:] = torch.eye(12, dtype=torch.float64)  # V = X
    x = torch.rand(1, 30, 12, dtype=torch.float64)
    y = attn(x, None)
    assert (y <= x.amax(1, keepdim=True) + 1e-12).all() and (y >= x.amin(1, keepdim=True) - 1e-12).all()


def test_real_positions_ignore_the_amount_and_values_of_padding() -> None:
    assert_padding_is_ignored(make(), 12, length=17, pads=(1, 30), scale=1e3, mask_alone=False)


def test_a_masked_hole_does_not_reach_other_positions() -> None:
    assert_holes_do_not_reach_other_positions(make(), 12, batch=1, length=20, holes=[6], scale=1e3)


def test_a_row_without_valid_keys_attends_to_all() -> None:
    attn = make()
    x = torch.randn(1, 9, 12, dtype=torch.float64)
    torch.testing.assert_close(attn(x, torch.zeros(1, 9, dtype=torch.bool)), attn(x, None))


def test_backbone_runs_forward_and_backward_at_an_odd_length() -> None:
    assert_encoder_trains_at_an_odd_length(partial(LinearAttention))


def test_no_length_squared_tensor_is_kept_at_16k() -> None:
    """Text sizes (D 256, 4 heads), L = 16,384, batch 1: every tensor saved for backward is O(L), not (L, L)."""
    assert_nothing_quadratic_is_kept(LinearAttention(256, 4, d_qkv=256))


# --- presets: LRA's linear_transformer_base.py of each task ----------------------------------------------------

@pytest.mark.parametrize("task", ["listops", "text", "retrieval"])
def test_presets_change_only_the_mechanism_where_lra_changes_only_model_type(task: str) -> None:
    """listops/text/matching linear_transformer_base.py set model_type only."""
    cfg = compose(f"linear_transformer-{task}")
    assert cfg.model.name == "linear_transformer"
    assert without_attention(cfg) == without_attention(compose(f"transformer-{task}"))


# task: layers, emb, heads, qkv, mlp (= head hidden), dropout, pooling (LRA image configs)
LRA_IMAGE = {
    "image": (1, 128, 8, 64, 128, 0.3, "cls"),  # cifar10/linear_transformer_base.py on base_cifar10_config.py
    "pathfinder": (1, 128, 2, 64, 128, 0.2, "mean"),  # pathfinder32/linear_transformer_base.py
    "pathx": (1, 128, 2, 64, 128, 0.2, "mean"),  # our Path-X rule: the Pathfinder model settings
}


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_presets_hold_lra_linear_transformer_settings(task: str) -> None:
    cfg = compose(f"linear_transformer-{task}")
    bb = cfg.model.net.backbone
    assert bb.attention._target_.endswith("LinearAttention") and bb.attention.eps == 1e-6
    if task in LRA_IMAGE:
        layers, emb, heads, qkv, mlp, drop, pool = LRA_IMAGE[task]
        assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
        assert (bb.dropout, cfg.model.net.pooling, cfg.model.net.head_hidden) == (drop, pool, mlp)
    if task in ("image", "pathfinder", "pathx"):
        assert cfg.model.net.lra_code is False  # the switch's default: pixel 0 is data
