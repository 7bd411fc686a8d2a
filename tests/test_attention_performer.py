"""Performer attention: performer-pytorch, the kernels' quadratic forms, FAVOR+'s softmax limit and unbiasedness,
padding, redrawing, the backbone, the LRA presets."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from lra_bench.benchmarks.references.performer import build, matched
from lra_bench.models.attention.performer import PerformerAttention, draw_projection, favor_exponent
from tests.attention_checks import (assert_encoder_trains_at_an_odd_length, assert_holes_do_not_reach_other_positions,
                                    assert_nothing_quadratic_is_kept, assert_padding_is_ignored, compose,
                                    without_attention)

SOFTMAX = dict(kernel="softmax", features="ortho", redraw=False, feature_eps=1e-6, stabilizer=1e-6)  # LRA ListOps


def make(**options) -> PerformerAttention:
    torch.manual_seed(0)
    return PerformerAttention(d_model=12, n_heads=3, **options).double().eval()


def heads(attn: PerformerAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, L, _ = x.shape
    return attn.qkv(x).view(B, L, 3, attn.n_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, E) each


def normalised(attn: PerformerAttention, A: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows of A (B, H, L, L) restricted to valid keys and divided by their sums, times V, out-projected."""
    A = A * mask[:, None, None, :].to(A.dtype)
    y = (A / A.sum(-1, keepdim=True)) @ v
    return attn.out(y.transpose(1, 2).reshape(v.size(0), v.size(2), -1))


def masks(B: int = 2, L: int = 23) -> torch.Tensor:
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 16:] = False  # length padding
    mask[1, [3, 11]] = False  # holes
    return mask


# --- against performer-pytorch --------------------------------------------------------------------------------

def test_relu_kernel_matches_performer_pytorch() -> None:
    """The bench pair (LRA's default kernel): the package with the identity as projection, float64, to 1e-12.
    Head dim 16, so the E^1/4 = 2 folded into the package's q/k weights is exact in float32."""
    ours, theirs = build(length=64, d_model=64, n_heads=4)
    x = torch.randn(2, 41, 64, dtype=torch.float64)
    torch.testing.assert_close(ours.double()(x), theirs.double()(x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n_features", [2, 24])
def test_favor_matches_performer_pytorch_with_the_same_projection(n_features: int) -> None:
    """FAVOR+ (2 features: LRA's ListOps; 24: more rows than the head dim, two orthogonal blocks), float64."""
    ours, theirs = matched(32, 4, kernel="softmax", n_features=n_features)
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    torch.testing.assert_close(ours.double()(x), theirs.double()(x), atol=1e-12, rtol=1e-12)


# --- against the quadratic forms ------------------------------------------------------------------------------

def test_relu_kernel_equals_its_quadratic_form() -> None:
    attn = make()
    x, mask = torch.randn(2, 23, 12, dtype=torch.float64), masks()
    q, k, v = heads(attn, x)
    A = (F.relu(q) + 1e-3) @ (F.relu(k) + 1e-3).transpose(-1, -2)
    torch.testing.assert_close(attn(x, mask), normalised(attn, A, v, mask), atol=1e-12, rtol=1e-12)


def test_favor_stabilisers_cancel_without_eps() -> None:
    """With eps 0, phi(Q) phi(K)^T normalised equals exp(e_q) exp(e_k)^T normalised: the maxima only rescale."""
    attn = make(**{**SOFTMAX, "feature_eps": 0.0, "n_features": 16})
    x, mask = torch.randn(2, 23, 12, dtype=torch.float64), masks()
    q, k, v = heads(attn, x)
    (pq, sq), (pk, sk) = favor_exponent(q, attn.projection), favor_exponent(k, attn.projection)
    A = torch.exp(pq + sq) @ torch.exp(pk + sk).transpose(-1, -2)
    torch.testing.assert_close(attn(x, mask), normalised(attn, A, v, mask), atol=1e-12, rtol=1e-12)


def test_favor_approaches_exact_softmax_attention_with_many_features() -> None:
    """2^14 orthogonal features, float64. Each kernel value is a mean over M features, so the error shrinks as
    M^-1/2: about 0.015 at 2^8 here, so ~0.002 expected at 2^14; atol 0.01 leaves 5x. Small q, k (|q'| < 1)
    keep the estimator's variance (~exp(|q' + k'|^2) - 1 per feature) small enough for that."""
    torch.manual_seed(0)
    x, mask = 0.3 * torch.randn(2, 20, 12, dtype=torch.float64), masks(2, 20)
    errors = {}
    for M in (2**8, 2**14):
        attn = make(**{**SOFTMAX, "feature_eps": 0.0, "n_features": M})
        q, k, v = heads(attn, x)
        exact = normalised(attn, torch.exp(q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))), v, mask)
        errors[M] = (attn(x, mask) - exact)[mask].abs().max().item()
    assert errors[2**14] < 1e-2
    assert errors[2**14] < errors[2**8] / 3  # the M^-1/2 rate predicts / 8


@pytest.mark.parametrize("features", ["iid", "ortho"])
def test_favor_features_are_unbiased(features: str) -> None:
    """Mean of exp(w.q' - |q'|^2/2) exp(w.k' - |k'|^2/2) over 40,000 rows w vs exp(q.k / sqrt(E)): within 5
    standard errors (the orthogonal rows' error is no larger than iid rows', so the iid standard error bounds it)."""
    torch.manual_seed(1)
    E = 4
    q, k = 0.7 * torch.randn(1, E, dtype=torch.float64), 0.7 * torch.randn(1, E, dtype=torch.float64)
    W = draw_projection(features, 40_000, E).double()
    (pq, sq), (pk, sk) = favor_exponent(q, W), favor_exponent(k, W)
    samples = (torch.exp(pq + sq) * torch.exp(pk + sk)).flatten()
    exact = torch.exp(q @ k.T / math.sqrt(E)).item()
    assert abs(samples.mean().item() - exact) < 5 * samples.std().item() / math.sqrt(samples.numel())


def test_orthogonal_rows_are_orthogonal_in_blocks_and_sign_symmetric() -> None:
    """Householder QR alone gives Q[0, 0] < 0 every time; with the sign fix each coordinate's sign is a coin."""
    torch.manual_seed(0)
    W = draw_projection("ortho", 8, 4)
    block = W[:4] / W[:4].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(4), atol=1e-5, rtol=0)
    first = torch.stack([draw_projection("ortho", 1, 4)[0, 0] for _ in range(400)])
    assert abs((first > 0).float().mean().item() - 0.5) < 0.1  # 4 standard deviations of a fair coin


# --- padding, redrawing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {**SOFTMAX, "n_features": 16}], ids=["relu", "softmax"])
def test_real_positions_ignore_the_amount_and_values_of_padding(options: dict) -> None:
    assert_padding_is_ignored(make(**options), 12, length=17, pads=(1, 30), scale=30, mask_alone=False)


@pytest.mark.parametrize("options", [{}, {**SOFTMAX, "n_features": 16}], ids=["relu", "softmax"])
def test_a_masked_hole_does_not_reach_other_positions(options: dict) -> None:
    assert_holes_do_not_reach_other_positions(make(**options), 12, batch=1, length=20, holes=[6], scale=30)


def test_redraw_draws_a_new_projection_at_each_training_call_only() -> None:
    attn = make(**{**SOFTMAX, "redraw": True, "n_features": 2}).train()
    x = torch.randn(1, 5, 12, dtype=torch.float64)
    first = attn.projection.clone()
    attn(x)
    trained = attn.projection.clone()
    assert not torch.equal(first, trained)
    attn.eval()
    y = attn(x)
    assert torch.equal(attn.projection, trained) and torch.equal(attn(x), y)  # evaluation is deterministic
    assert "projection" in attn.state_dict()  # the last draw is saved with the model


# --- the backbone ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {**SOFTMAX, "n_features": 2, "redraw": True}], ids=["relu", "softmax"])
def test_backbone_runs_forward_and_backward_at_an_odd_length(options: dict) -> None:
    assert_encoder_trains_at_an_odd_length(partial(PerformerAttention, **options))


def test_no_length_squared_tensor_is_kept_at_16k() -> None:
    """Text sizes (D 256, 4 heads), L = 16,384, batch 1: every tensor saved for backward is O(L), not (L, L)."""
    assert_nothing_quadratic_is_kept(PerformerAttention(256, 4, d_qkv=256))


# --- presets: LRA's performer_base.py of each task -------------------------------------------------------------

@pytest.mark.parametrize("task", ["listops", "text", "retrieval"])
def test_presets_change_only_the_mechanism_where_lra_changes_only_the_attention(task: str) -> None:
    """listops/text/matching performer_base.py set model_type (and ListOps its kernel) only."""
    cfg = compose(f"performer-{task}")
    assert cfg.model.name == "performer"
    assert without_attention(cfg) == without_attention(compose(f"transformer-{task}"))


# kernel, features, M, redraw, feature eps, stabiliser: ListOps sets attention_fn_cls="softmax", nb_features=2
# (make_fast_softmax_attention's defaults otherwise); every other task runs make_fast_generalized_attention's
RELU = ("relu", "deterministic", 256, False, 1e-3, 0.0)
KERNEL = {"listops": ("softmax", "ortho", 2, True, 1e-6, 1e-6), "text": RELU, "retrieval": RELU, "image": RELU,
          "pathfinder": RELU, "pathx": RELU}
# task: layers, emb, heads, qkv, mlp (= head hidden), dropout, pooling (LRA image configs)
LRA_IMAGE = {
    "image": (1, 128, 8, 64, 128, 0.3, "cls"),  # cifar10/performer_base.py on base_cifar10_config.py
    "pathfinder": (4, 32, 8, 16, 32, 0.2, "mean"),  # pathfinder32/performer_base.py
    "pathx": (4, 32, 8, 16, 32, 0.2, "mean"),  # our Path-X rule: the Pathfinder model settings
}


@pytest.mark.parametrize("task", list(KERNEL))
def test_presets_hold_lra_performer_settings(task: str) -> None:
    cfg = compose(f"performer-{task}")
    bb = cfg.model.net.backbone
    a = bb.attention
    assert a._target_.endswith("PerformerAttention")
    assert (a.kernel, a.features, a.n_features, a.redraw, a.feature_eps, a.stabilizer) == KERNEL[task]
    if task in LRA_IMAGE:
        layers, emb, heads, qkv, mlp, drop, pool = LRA_IMAGE[task]
        assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
        assert (bb.dropout, cfg.model.net.pooling, cfg.model.net.head_hidden) == (drop, pool, mlp)
    if task in ("image", "pathfinder", "pathx"):
        assert cfg.model.net.lra_code is False  # the switch's default: pixel 0 is data
