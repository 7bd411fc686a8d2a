"""The fused Hankel-biased softmax equals the plain formula softmax(s q k^T + Toeplitz bias), values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lra_bench.models.mega.biased_softmax import hankel_biased_softmax
from lra_bench.models.mega.mega import MovingAverageGatedAttention, SimpleRelativePositionalBias


def plain(q, k, bias_module, S, pad, scaling):
    scores = scaling * q @ k.transpose(1, 2) + bias_module(S)
    if pad is not None:
        scores = scores.masked_fill(pad, float("-inf"))
    return torch.softmax(scores, dim=-1)


@pytest.mark.parametrize("masked", [False, True])
def test_values_and_gradients_equal_the_plain_formula(masked: bool) -> None:
    torch.manual_seed(0)
    n, S, Z, M = 3, 7, 5, 9
    bias = SimpleRelativePositionalBias(M).double()
    q = torch.randn(n, S, Z, dtype=torch.float64, requires_grad=True)
    k = torch.randn(n, S, Z, dtype=torch.float64, requires_grad=True)
    pad = None
    if masked:
        lengths = torch.tensor([7, 4, 1])
        pad = (torch.arange(S)[None, :] >= lengths[:, None])[:, None, :]
    ref = plain(q, k, bias, S, pad, 0.3)
    out = hankel_biased_softmax(q, k.flip(1), bias.hankel(S), None if pad is None else pad.flip(-1), 0.3).flip(-1)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (q, k, bias.rel_pos_bias), g)
    got = torch.autograd.grad(out, (q, k, bias.rel_pos_bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_gradcheck() -> None:
    torch.manual_seed(1)
    q = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(7, dtype=torch.float64, requires_grad=True)
    pad = torch.tensor([[[False, False, True, True]], [[False, False, False, False]]])
    assert torch.autograd.gradcheck(lambda q, k, c: hankel_biased_softmax(q, k, c, pad, 0.7), (q, k, c))


@pytest.mark.parametrize("chunk", [-1, 4], ids=["full", "chunked"])
def test_the_mega_layer_equals_its_plain_toeplitz_path(chunk: int) -> None:
    """Output and every parameter gradient of a padded batch, including a chunk of pads only."""
    torch.manual_seed(2)
    layer = MovingAverageGatedAttention(8, 12, 6, 3, chunk, None, "softmax", "simple", 16).double().eval()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    mask = torch.arange(12)[None, :] < torch.tensor([12, 5])[:, None]

    def reference(x):  # the same data flow with weights from attention_weights (baddbmm + Toeplitz)
        m = layer
        x_n = m.norm(x)
        v = F.silu(m.v_proj(x_n))
        u, zr, hx = torch.split(m.mx_proj(m.move(x_n, mask)), [8, 6 + 12, 8], dim=-1)
        z, r = torch.split(F.silu(zr), [6, 12], dim=-1)
        q, k = z * m.gamma[0] + m.beta[0], z * m.gamma[1] + m.beta[1]
        C = chunk if chunk > 0 else 12
        shape = (2, 12 // C, C)
        w = m.attention_weights(q.view(*shape, 6), k.view(*shape, 6), mask.view(shape))
        h = (w @ v.view(*shape, 12)).view(2, 12, 12)
        h = F.silu(hx + m.h_proj(h * r))
        return x + torch.sigmoid(u) * (h - x)

    got, want = layer(x, mask), reference(x)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    params = [p for p in layer.parameters()]
    for a, b, p in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g), layer.named_parameters()):
        torch.testing.assert_close(a, b, msg=p[0])
