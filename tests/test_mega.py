"""Mega and Mega-chunk: parity with the Hugging Face port, and equivalences that catch a wrong constant."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.deprecated.mega import MegaConfig
from transformers.models.deprecated.mega.modeling_mega import MegaBlock

from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.mega.ema import MultiHeadEMA, fast_fft_size
from lra_bench.models.mega.mega import (
    LAPLACE_MU,
    LAPLACE_SIGMA,
    MegaEncoder,
    MegaEncoderLayer,
    SimpleRelativePositionalBias,
    laplace,
    mega_block_from_hf,
    relu2,
)

D, H, Z, N, F_, C, M = 16, 24, 8, 4, 20, 8, 64


def hf_block(attention: str, chunked: bool, prenorm: bool, norm: str = "layernorm", rel_pos: str = "simple",
             truncation: int | None = None) -> MegaBlock:
    cfg = MegaConfig(
        hidden_size=D, intermediate_size=H, shared_representation_size=Z, ema_projection_size=N, nffn_hidden_size=F_,
        chunk_size=C if chunked else -1, use_chunking=chunked, truncation=truncation, attention_activation=attention,
        normalization_type=norm, normalize_before_mega=prenorm, normalize_before_ffn=prenorm,
        relative_positional_bias=rel_pos, max_positions=M, dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        hidden_dropout_prob=0.0, nffn_activation_dropout_prob=0.0, bidirectional=True, activation="silu",
    )
    block = MegaBlock(cfg).eval()
    with torch.no_grad():
        for p in block.parameters():  # random weights well away from init, so every term matters
            p.normal_(0.0, 0.3)
    return block


def our_layer(attention: str, chunked: bool, prenorm: bool, norm: str = "layernorm", rel_pos: str = "simple",
              truncation: int | None = None) -> MegaEncoderLayer:
    return MegaEncoderLayer(D, H, F_, Z, N, C if chunked else -1, truncation, attention, rel_pos, M, norm, prenorm,
                            0.0, 0.0, 0.0).eval()


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("prenorm", [True, False], ids=["prenorm", "postnorm"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "full"])
@pytest.mark.parametrize("attention", ["softmax", "laplace", "relu2"])
def test_one_block_matches_the_hugging_face_port(attention: str, chunked: bool, prenorm: bool, padded: bool) -> None:
    torch.manual_seed(0)
    hf = hf_block(attention, chunked, prenorm)
    ours = mega_block_from_hf(our_layer(attention, chunked, prenorm), hf)
    x = torch.randn(3, 32, D)
    # the third row leaves chunks 1..3 entirely padded: the softmax mask must be dropped there
    lengths = torch.tensor([32, 20, 5]) if padded else torch.full((3,), 32)
    mask = torch.arange(32)[None] < lengths[:, None]
    with torch.no_grad():
        expected = hf(x.transpose(0, 1), attention_mask=mask.long())[0].transpose(0, 1)
        got = ours(x, mask if padded else None)
    assert (got - expected)[mask].abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "norm, rel_pos, truncation", [("scalenorm", "simple", None), ("layernorm", "rotary", None), ("layernorm", "simple", 10)]
)
def test_scalenorm_rotary_bias_and_truncation_match_the_port(norm: str, rel_pos: str, truncation: int | None) -> None:
    torch.manual_seed(1)
    hf = hf_block("softmax", True, False, norm, rel_pos, truncation)
    ours = mega_block_from_hf(our_layer("softmax", True, False, norm, rel_pos, truncation), hf)
    x = torch.randn(2, 32, D)
    with torch.no_grad():
        expected = hf(x.transpose(0, 1))[0].transpose(0, 1)
        assert (ours(x) - expected).abs().max().item() <= 1e-5


def test_batchnorm_prenorm_matches_the_port_in_eval() -> None:
    torch.manual_seed(2)
    hf = hf_block("laplace", True, True, "batchnorm")
    ours = mega_block_from_hf(our_layer("laplace", True, True, "batchnorm"), hf)
    x = torch.randn(2, 32, D)
    with torch.no_grad():
        assert (ours(x) - hf(x.transpose(0, 1))[0].transpose(0, 1)).abs().max().item() <= 1e-5


# --- EMA --------------------------------------------------------------------------------------

def ema_by_recurrence(ema: MultiHeadEMA, x: torch.Tensor) -> torch.Tensor:
    """The damped EMA as a loop over time (eq. 2): h_t = p*beta*x_t + q*h_{t-1}, y_t = sum_n gamma*scale*h_t.

    Bidirectional = a forward pass with rows 0..D-1 plus a backward pass (reversed time) with rows D..2D-1.
    """
    p, q = (t.squeeze(-1).double() for t in ema.coefficients())  # (C, N)
    beta, gamma = ema.beta.squeeze(-1).double(), ema.gamma.double()
    B, L, Dm = x.shape
    xd = x.double()

    def run(xs: torch.Tensor, rows: slice) -> torch.Tensor:
        h = torch.zeros(B, Dm, ema.n_dim, dtype=torch.float64)
        out = []
        for t in range(L):
            h = p[rows] * beta[rows] * xs[:, t, :, None] + q[rows] * h
            out.append((h * gamma[rows] * ema.scale).sum(-1))
        return torch.stack(out, dim=1)

    y = run(xd, slice(0, Dm))
    if ema.bidirectional:
        y = y + run(xd.flip(1), slice(Dm, 2 * Dm)).flip(1)
    return F.silu(y + xd * ema.omega.double())


@pytest.mark.parametrize("bidirectional", [True, False])
def test_fft_ema_equals_the_direct_recurrence(bidirectional: bool) -> None:
    torch.manual_seed(0)
    ema = MultiHeadEMA(6, n_dim=5, bidirectional=bidirectional, truncation=None)
    x = torch.randn(2, 50, 6)
    torch.testing.assert_close(ema(x).double(), ema_by_recurrence(ema, x), atol=1e-5, rtol=1e-5)


def test_causal_ema_leaks_nothing_from_the_future() -> None:
    torch.manual_seed(0)
    ema = MultiHeadEMA(4, n_dim=3, bidirectional=False)
    x = torch.randn(1, 30, 4)
    y = x.clone()
    y[0, 20:] = torch.randn(10, 4)
    torch.testing.assert_close(ema(x)[0, :20], ema(y)[0, :20])


def test_truncated_kernel_is_the_first_taps_of_the_full_one_and_sets_the_conv_length() -> None:
    torch.manual_seed(0)
    full = MultiHeadEMA(3, n_dim=2, truncation=None)
    cut = MultiHeadEMA(3, n_dim=2, truncation=7)
    cut.load_state_dict(full.state_dict())
    assert cut.kernel(40).shape == (6, 7)
    torch.testing.assert_close(cut.kernel(40), full.kernel(40)[:, :7])
    # a 7-tap EMA ignores inputs 7 or more steps away in either direction
    x = torch.randn(1, 40, 3)
    y = x.clone()
    y[0, 30:] += 1.0
    torch.testing.assert_close(cut(x)[0, :23], cut(y)[0, :23])


def test_ema_kernel_by_hand() -> None:
    """delta = alpha = 0 -> p = 1/2, q = 1 - 1/4 = 3/4; beta = gamma = 1, N = 1: K[t] = 1/2 * (3/4)^t."""
    ema = MultiHeadEMA(1, n_dim=1, bidirectional=False)
    with torch.no_grad():
        ema.delta.zero_(), ema.alpha.zero_(), ema.beta.fill_(1.0), ema.gamma.fill_(1.0)
    expected = torch.tensor([0.5 * 0.75**t for t in range(6)])
    torch.testing.assert_close(ema.kernel(6)[0], expected)


def test_ema_init_follows_the_official_code() -> None:
    torch.manual_seed(0)
    ema = MultiHeadEMA(64, n_dim=16)
    assert ema.delta.shape == (128, 16, 1) and ema.gamma.shape == (128, 16) and ema.omega.shape == (64,)
    signs = torch.sign(ema.beta.squeeze(-1).mean(0))
    assert signs.tolist() == [1.0, -1.0] * 8  # (1, -1, 1, -1, ...) + N(0, 0.02)
    assert ema.delta.std().item() == pytest.approx(0.2, rel=0.1)
    assert ema.scale == pytest.approx(math.sqrt(1 / 16))


def test_fft_sizes_are_smooth() -> None:
    for n in (1, 7, 1023, 5119, 17407):
        size = fast_fft_size(n)
        assert size >= n and size < 1.25 * n + 2
        rest = size
        for f in (2, 3, 5):
            while rest % f == 0:
                rest //= f
        assert rest == 1


# --- attention --------------------------------------------------------------------------------

def test_laplace_constants_match_relu2_at_mu() -> None:
    """mu = sqrt(1/2), sigma = sqrt(1/(4 pi)): laplace equals relu^2 in value (1/2) and slope (sqrt 2) at mu."""
    assert LAPLACE_MU == pytest.approx(0.707107, abs=1e-6) and LAPLACE_SIGMA == pytest.approx(0.282095, abs=1e-6)
    x = torch.tensor(LAPLACE_MU, dtype=torch.float64, requires_grad=True)
    (g_lap,) = torch.autograd.grad(laplace(x), x)
    y = torch.tensor(LAPLACE_MU, dtype=torch.float64, requires_grad=True)
    (g_relu2,) = torch.autograd.grad(relu2(y), y)
    assert laplace(x).item() == pytest.approx(0.5) == relu2(y).item()
    assert g_lap.item() == pytest.approx(math.sqrt(2), rel=1e-5) and g_relu2.item() == pytest.approx(math.sqrt(2))


def test_simple_relative_bias_by_hand() -> None:
    bias = SimpleRelativePositionalBias(4)
    with torch.no_grad():
        bias.rel_pos_bias.copy_(torch.arange(7.0))  # w[k] = k, offsets -3..3 at k = 0..6
    expected = torch.tensor([[3.0, 4.0, 5.0], [2.0, 3.0, 4.0], [1.0, 2.0, 3.0]])  # w[M-1 + j - i]
    torch.testing.assert_close(bias(3), expected)
    with pytest.raises(ValueError, match="max_positions"):
        bias(5)


def encoder(attention: str, chunk: int, max_positions: int = 64, norm: str = "layernorm", prenorm: bool = False) -> MegaEncoder:
    torch.manual_seed(0)
    return MegaEncoder(D, 2, H, F_, Z, N, chunk, None, attention, "simple", max_positions, norm, prenorm).eval()


@pytest.mark.parametrize("attention", ["softmax", "laplace", "relu2"])
def test_chunk_size_at_least_the_length_equals_full_attention(attention: str) -> None:
    full = encoder(attention, -1, max_positions=24)
    chunked = encoder(attention, 24)  # one chunk of 24; its bias is sized 24 too
    chunked.load_state_dict(full.state_dict())
    x, lengths = torch.randn(2, 24, D), torch.tensor([24, 17])
    torch.testing.assert_close(chunked(x, lengths), full(x, lengths), atol=1e-6, rtol=1e-5)
    shorter = torch.randn(2, 19, D)  # L < C: the whole sequence is one chunk
    torch.testing.assert_close(chunked(shorter, torch.tensor([19, 3])), full(shorter, torch.tensor([19, 3])), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chunk", [-1, 8], ids=["full", "chunked"])
@pytest.mark.parametrize("attention", ["softmax", "laplace", "relu2"])
def test_real_positions_do_not_change_when_padding_is_added(attention: str, chunk: int) -> None:
    model = encoder(attention, chunk, prenorm=True, norm="scalenorm")
    x = torch.randn(1, 13, D)  # 13 is not a multiple of 8: the encoder pads to 16 and cuts back
    alone = model(x, torch.tensor([13]))
    for extra in (3, 11, 27):
        padded = torch.cat([x, torch.randn(1, extra, D)], dim=1)
        out = model(padded, torch.tensor([13]))
        assert out.shape == (1, 13 + extra, D)
        torch.testing.assert_close(out[:, :13], alone, atol=1e-5, rtol=1e-5)
        assert (out[:, 13:] == 0).all()


def test_mega_chunk_runs_on_pixels_of_any_length() -> None:
    """facebookresearch/mega#16: pixel inputs of a length that is not a chunk multiple must just work."""
    torch.manual_seed(0)
    backbone = MegaEncoder(D, 1, H, F_, Z, N, 128, 64, "laplace", "simple", 128, "batchnorm", True)
    net = SequenceClassifier(backbone, D, 10, input="real", pixel_mean=0.48, pixel_std=0.24, head_hidden=2 * D).eval()
    pixels = torch.randint(0, 256, (2, 1000))
    logits = net(pixels, torch.tensor([1000, 1000]))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_bf16_autocast_on_cpu_stays_finite() -> None:
    torch.manual_seed(0)
    for attention, chunk in (("softmax", -1), ("laplace", 8)):
        model = MegaEncoder(D, 2, H, F_, Z, N, chunk, 16, attention, "simple", 64, "scalenorm", False, 0.1).train()
        x = torch.randn(2, 40, D, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, torch.tensor([40, 23]))
        out.float().square().mean().backward()
        assert torch.isfinite(out.float()).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert torch.isfinite(x.grad).all()


def test_linear_layers_start_at_n_0_002_with_zero_bias() -> None:
    torch.manual_seed(0)
    layer = MegaEncoderLayer(256, 512, 512, 64, 16, -1, None, "softmax", "simple", 64, "layernorm", False, 0, 0, 0)
    for linear in (layer.mega_layer.v_proj, layer.mega_layer.mx_proj, layer.mega_layer.h_proj, layer.nffn.fc1, layer.nffn.fc2):
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert (linear.bias == 0).all()
    assert (layer.mega_layer.beta == 0).all() and layer.mega_layer.gamma.std().item() == pytest.approx(0.02, rel=0.2)
    assert layer.mega_layer.mx_proj.out_features == 256 + 64 + 512 + 256  # [u | z, r | hx]


@pytest.mark.parametrize("attention", ["softmax", "laplace", "relu2"])
def test_integer_and_bool_masks_give_the_same_result_on_every_attention_path(attention: str) -> None:
    torch.manual_seed(0)
    layer = MegaEncoderLayer(16, 32, 32, 8, 4, -1, None, attention, "simple", 32, "layernorm", False, 0.0, 0.0, 0.0).eval()
    x = torch.randn(2, 10, 16)
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6]])
    expected = layer(x, mask)
    for other in (mask.long(), mask.int(), mask.float()):
        torch.testing.assert_close(layer(x, other), expected)
    with pytest.raises(ValueError, match="0/1"):
        layer(x, mask.long() * 2)
