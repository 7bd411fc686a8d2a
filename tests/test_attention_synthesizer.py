"""Synthesizer attention: each mode against its formula, padding invariance, LRA's variant and presets."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hydra.utils import instantiate

from lra_bench.models.attention.synthesizer import SynthesizerAttention
from lra_bench.models.attention.transformer import TransformerEncoder
from tests.attention_checks import assert_holes_do_not_reach_other_positions, assert_padding_is_ignored
from tests.conftest import compose_config

D, H, M = 8, 2, 24  # model dim, heads, max_length


def make(mode: str = "random", ignore_dot_product: bool = False, **kw) -> SynthesizerAttention:
    torch.manual_seed(0)
    attn = SynthesizerAttention(D, H, M, d_qkv=D, mode=mode, ignore_dot_product=ignore_dot_product, k=5, **kw)
    return attn.double().eval()


def heads(lin: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) through a Linear into (B, H, L, E)."""
    B, L, _ = x.shape
    return lin(x).view(B, L, H, -1).transpose(1, 2)


def finish(attn: SynthesizerAttention, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """softmax(logits) V, then the output projection: the formula every mode shares."""
    y = torch.softmax(logits, dim=-1) @ heads(attn.value, x)
    return attn.out(y.transpose(1, 2).reshape(x.size(0), x.size(1), -1))


def test_dense_synthesizer_is_softmax_of_an_mlp_of_each_token_times_values() -> None:
    """Dense: B_h[i, j] = (W2 relu(W1_h x_i))_j, Y_h = softmax(B_h) V_h (Synthesizer paper Eq. 2)."""
    attn = make("dense", ignore_dot_product=True)
    x = torch.randn(2, 11, D, dtype=torch.float64)
    E = D // H
    logits = torch.empty(2, H, 11, 11, dtype=torch.float64)
    for h in range(H):
        W1_h = attn.W1.weight[h * E : (h + 1) * E]  # (E, D)
        hidden = torch.relu(x @ W1_h.T)  # (B, L, E)
        logits[:, h] = (hidden @ attn.W2.weight.T)[..., :11]  # the first L of max_length outputs
    torch.testing.assert_close(attn(x, None), finish(attn, logits, x), atol=1e-12, rtol=1e-10)


def test_random_synthesizer_is_softmax_of_a_learned_matrix_times_values() -> None:
    """Random: Y_h = softmax(R_h[:L, :L]) V_h, the same weights for every input (paper Eq. 4)."""
    attn = make("random", ignore_dot_product=True)
    x = torch.randn(3, 13, D, dtype=torch.float64)
    logits = attn.R[None, :, :13, :13].expand(3, -1, -1, -1)
    torch.testing.assert_close(attn(x, None), finish(attn, logits, x), atol=1e-12, rtol=1e-10)


def test_factorized_random_synthesizer_is_a_rank_k_matrix() -> None:
    attn = make("factorized_random", ignore_dot_product=True)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    logits = torch.einsum("hik,hkj->hij", attn.R1[:, :9], attn.R2[:, :, :9])[None].expand(2, -1, -1, -1)
    torch.testing.assert_close(attn(x, None), finish(attn, logits, x), atol=1e-12, rtol=1e-10)


def test_lra_default_adds_the_random_logits_to_the_dot_product() -> None:
    """LRA's run (mode random, ignore_dot_product False): softmax(Q K^T / sqrt(E) + R[:L, :L]) V."""
    attn = make()
    assert attn.modes == {"random"} and not attn.ignore_dot_product
    x = torch.randn(2, 10, D, dtype=torch.float64)
    q, k = heads(attn.query, x), heads(attn.key, x)
    logits = q @ k.transpose(-1, -2) / math.sqrt(D // H) + attn.R[None, :, :10, :10]
    torch.testing.assert_close(attn(x, None), finish(attn, logits, x), atol=1e-12, rtol=1e-10)


def test_dense_plus_random_sums_both_logits() -> None:
    attn = make("dense+random", ignore_dot_product=True)
    x = torch.randn(1, 7, D, dtype=torch.float64)
    dense_only = attn.synthetic_logits(x) - attn.R[None, :, :7, :7]
    with torch.no_grad():
        attn.R.zero_()
    torch.testing.assert_close(attn.synthetic_logits(x), dense_only, atol=1e-12, rtol=1e-10)


def test_dense_logits_of_a_row_come_from_that_token_alone() -> None:
    """Row i of the dense logits is F(x_i) (LRA's head/length reshape would mix rows of other positions)."""
    attn = make("dense", ignore_dot_product=True)
    x = torch.randn(1, 10, D, dtype=torch.float64)
    y = x.clone()
    y[0, 6] += torch.randn(D, dtype=torch.float64)
    changed = (attn.synthetic_logits(x) != attn.synthetic_logits(y)).any(-1)[0]  # (H, L)
    assert changed[:, 6].all() and not changed[:, :6].any() and not changed[:, 7:].any()


MODES = [("random", False), ("random", True), ("factorized_random", True), ("dense", True), ("dense+random", False)]


@pytest.mark.parametrize("mode, ignore", MODES)
def test_real_positions_ignore_extra_padding_and_pad_values(mode: str, ignore: bool) -> None:
    """R indexes absolute positions, so with pad keys masked a real row sees the same logits and keys."""
    assert_padding_is_ignored(make(mode, ignore), D, length=9, pads=(1, 8, M - 9), scale=100, rtol=1e-10)


@pytest.mark.parametrize("mode, ignore", MODES)
def test_masked_holes_do_not_reach_other_positions(mode: str, ignore: bool) -> None:
    assert_holes_do_not_reach_other_positions(make(mode, ignore), D, batch=2, length=15, holes=[0, 4, 5, 12], scale=30,
                                              rtol=1e-10)


def test_masked_queries_take_the_mean_of_all_values_as_flax() -> None:
    attn = make()
    x = torch.randn(1, 6, D, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, True, False]])
    v = heads(attn.value, x)  # (1, H, L, E)
    expected = attn.out(v.mean(2).reshape(1, -1))
    torch.testing.assert_close(attn(x, mask)[0, [1, 5]], expected.expand(2, -1), atol=1e-12, rtol=1e-10)


def test_random_matrices_follow_flax_xavier_on_their_3d_shape() -> None:
    torch.manual_seed(0)
    attn = SynthesizerAttention(16, 4, 64, mode="random")
    bound = math.sqrt(6 / (4 * (64 + 64)))
    assert attn.R.abs().max() <= bound and attn.R.abs().max() > 0.99 * bound
    assert attn.query.bias is None and attn.out.bias is None


def test_bad_mode_and_too_long_input_are_named() -> None:
    with pytest.raises(ValueError, match="mode"):
        SynthesizerAttention(D, H, M, mode="random+factorized_random")
    with pytest.raises(ValueError, match="mode"):
        SynthesizerAttention(D, H, M, mode="convolution")
    with pytest.raises(ValueError, match="max_length"):
        make()(torch.randn(1, M + 1, D, dtype=torch.float64), None)


@pytest.mark.parametrize("mode, ignore", MODES)
def test_encoder_with_synthesizer_trains_at_an_odd_length(mode: str, ignore: bool) -> None:
    torch.manual_seed(0)
    attention = functools.partial(SynthesizerAttention, mode=mode, ignore_dot_product=ignore, k=4)
    model = TransformerEncoder(d_model=16, n_layers=2, n_heads=2, d_ff=32, max_length=40, attention=attention)
    x = torch.randn(3, 37, 16)
    out = model(x, torch.tensor([37, 20, 3]))
    out.square().mean().backward()
    assert out.shape == (3, 37, 16) and (out[1, 20:] == 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# task: (layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, head hidden, max_length)
LRA_SYNTHESIZER = {
    "listops": (6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 2048, 2001),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 1024, 4001),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", [512, 256], 4000),
    "image": (1, 128, 8, 64, 128, 0.3, 0.2, "cls", "learned", 128, 1025),
    "pathfinder": (2, 64, 4, 32, 64, 0.2, 0.1, "mean", "sinusoidal", 64, 1024),
    "pathx": (2, 64, 4, 32, 64, 0.2, 0.1, "mean", "learned", 64, 16384),
}


@pytest.mark.parametrize("task", list(LRA_SYNTHESIZER))
def test_synthesizer_presets_hold_the_lra_settings(task: str) -> None:
    layers, emb, heads_, qkv, mlp, drop, attn_drop, pool, pos, head, max_length = LRA_SYNTHESIZER[task]
    cfg = compose_config([f"experiment=lra/synthesizer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    net, bb = cfg.model.net, cfg.model.net.backbone
    assert cfg.model.name == "synthesizer"
    assert bb.attention._target_ == "lra_bench.models.attention.synthesizer.SynthesizerAttention"
    assert (bb.attention.mode, bb.attention.ignore_dot_product) == ("random", False)
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads_, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling, bb.positions) == (drop, attn_drop, pool, pos)
    assert bb.max_length == max_length
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    assert net.lra_code is False and bb.attention.lra_code is False  # the switch's default: pixel 0 is data
    transformer = compose_config([f"experiment=lra/transformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    assert cfg.optimizer == transformer.optimizer and cfg.scheduler == transformer.scheduler
    assert cfg.trainer.max_steps == transformer.trainer.max_steps and cfg.task.batch_size == transformer.task.batch_size
    if cfg.task.vocab_size is None:
        cfg.task.vocab_size = 256
    with torch.device("meta"):  # random mode holds H max_length^2 logits per layer (Path-X: 1.07 G)
        backbone = instantiate(cfg.model.net).backbone
    assert all(layer.attn.R.shape == (heads_, max_length, max_length) for layer in backbone.layers)
