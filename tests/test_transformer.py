"""The LRA Transformer backbone: bidirectional, padding from lengths, positions."""

from __future__ import annotations

import pytest
import torch

from lra_bench.models.attention.transformer import PositionalEncoding, TransformerEncoder, sinusoidal_table


def make(**kw) -> TransformerEncoder:
    torch.manual_seed(0)
    args = dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, dropout=0.0, attn_dropout=0.0, max_length=64)
    return TransformerEncoder(**{**args, **kw}).eval()


@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "none"])
def test_real_positions_do_not_change_when_padding_is_added(prenorm: bool, positions: str) -> None:
    model = make(prenorm=prenorm, positions=positions)
    x = torch.randn(1, 10, 16)
    alone = model(x, torch.tensor([10]))
    padded = model(torch.cat([x, torch.randn(1, 7, 16)], dim=1), torch.tensor([10]))
    torch.testing.assert_close(padded[:, :10], alone, atol=1e-5, rtol=1e-5)
    assert (padded[:, 10:] == 0).all(), "pad positions come out as zeros"


def test_batch_rows_with_different_lengths_match_their_unpadded_outputs() -> None:
    model = make()
    xs = [torch.randn(1, n, 16) for n in (5, 12, 9)]
    batch = torch.zeros(3, 12, 16)
    for i, x in enumerate(xs):
        batch[i, : x.size(1)] = x
    out = model(batch, torch.tensor([5, 12, 9]))
    for i, x in enumerate(xs):
        torch.testing.assert_close(out[i : i + 1, : x.size(1)], model(x, torch.tensor([x.size(1)])), atol=1e-5, rtol=1e-5)


def test_attention_is_bidirectional() -> None:
    """Changing a late token changes the output at an early position (no causal mask)."""
    model = make(n_layers=1)
    x = torch.randn(1, 8, 16)
    y = x.clone()
    y[0, 7] += torch.randn(16)  # not a constant shift: LayerNorm would remove that
    lengths = torch.tensor([8])
    assert not torch.allclose(model(x, lengths)[0, 0], model(y, lengths)[0, 0])


def test_sinusoidal_table_matches_the_formula() -> None:
    t = sinusoidal_table(50, 8)
    pos, i = 17, 2  # channel pair i uses frequency 10000^(-2i/d)
    freq = 10000 ** (-2 * i / 8)
    assert t[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(pos * freq)).item(), abs=1e-6)
    assert t[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(pos * freq)).item(), abs=1e-6)


def test_too_long_input_names_the_option() -> None:
    with pytest.raises(ValueError, match="max_length"):
        PositionalEncoding("learned", 4, 8)(torch.zeros(1, 5, 8))


def test_projections_have_no_bias_and_are_xavier_initialised() -> None:
    attn = make().layers[0].attn
    assert attn.qkv.bias is None and attn.out.bias is None
    bound = (6 / (16 + 16)) ** 0.5  # xavier-uniform bound of each (16 -> 16) q/k/v block
    assert attn.qkv.weight.abs().max() <= bound + 1e-6
    assert attn.qkv.weight.abs().max() > 0.8 * bound


def test_vanilla_attention_equals_sdpa() -> None:
    torch.manual_seed(0)
    sdpa = make()
    vanilla = make(attention="vanilla")
    vanilla.load_state_dict(sdpa.state_dict())
    x, lengths = torch.randn(2, 12, 16), torch.tensor([12, 7])
    torch.testing.assert_close(vanilla(x, lengths), sdpa(x, lengths), atol=1e-5, rtol=1e-5)


def lra_pixel_classifier(lra_code: bool, pooling: str = "mean"):
    from lra_bench.models.classifier import SequenceClassifier

    torch.manual_seed(0)
    backbone = TransformerEncoder(16, 2, 2, 32, dropout=0.0, attn_dropout=0.0, max_length=40, positions="learned",
                                  lra_code=lra_code)
    return SequenceClassifier(backbone, 16, 3, vocab_size=256, padding_idx=None, pooling=pooling, head_hidden=8,
                              lra_code=lra_code).eval()


@pytest.mark.parametrize("impl", ["sdpa", "vanilla"])
def test_lra_mode_hides_black_pixels_from_attention(impl: str) -> None:
    """LRA's mask is inputs > 0: with lra_code what a black pixel embeds changes nothing at the other pixels."""
    pixels = torch.tensor([[12, 0, 200, 7, 0, 0, 90, 33, 1, 0]])
    lengths = torch.tensor([10])
    bright = pixels[0] > 0
    for lra_mode in (True, False):
        net = lra_pixel_classifier(lra_mode)
        for layer in net.backbone.layers:
            layer.attn.impl = impl
        with torch.no_grad():
            before = net.backbone(net.embedding(pixels), lengths, **({"token_mask": pixels > 0} if lra_mode else {}))
            net.embedding.weight[0] += torch.randn(16)  # a different black
            after = net.backbone(net.embedding(pixels), lengths, **({"token_mask": pixels > 0} if lra_mode else {}))
        changed = not torch.allclose(before[0, bright], after[0, bright], atol=1e-6)
        assert changed != lra_mode, f"lra_code={lra_mode}: a black pixel {'changed' if changed else 'did not change'} the others"


def test_lra_mode_masked_queries_attend_uniformly_and_cls_takes_the_first_pixels_mask() -> None:
    """A masked query gets flax's -1e10 on every key, i.e. the plain mean of all values; CLS inherits pixel 0's mask."""
    from lra_bench.models.attention.softmax import SoftmaxAttention

    torch.manual_seed(1)
    attn = SoftmaxAttention(8, 2, 8).eval()
    x = torch.randn(1, 5, 8)
    mask = torch.tensor([[True, False, True, True, False]])
    y = attn(x, mask)
    v = (x @ attn.qkv.weight.T).view(1, 5, 3, 2, 4)[:, :, 2]  # (B, L, H, E)
    expected_masked = attn.out(v.mean(1).reshape(1, 8))
    torch.testing.assert_close(y[0, 1], expected_masked[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y[0, 4], expected_masked[0], atol=1e-6, rtol=1e-6)
    black_first = torch.tensor([[0, 5, 9, 0]])
    net = lra_pixel_classifier(True, pooling="cls")
    seen = {}
    net.backbone.register_forward_hook(lambda m, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    net(black_first, torch.tensor([4]))  # padded to LRA's 39 pixels + CLS, every one of them data
    assert seen["token_mask"].tolist() == [[False, False, True, True, False] + [False] * 35]
    assert seen["token_mask"].shape == (1, 40) and net.backbone.max_length == 40


def test_an_all_black_image_gives_finite_outputs() -> None:
    net = lra_pixel_classifier(True)
    assert torch.isfinite(net(torch.zeros(2, 10, dtype=torch.long), torch.tensor([10, 10]))).all()
