"""The classifier: embedding, pooling from true lengths, heads, and the two-tower pair form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.masks import masked_mean
from lra_bench.models.attention.transformer import TransformerEncoder


class Identity(nn.Module):
    """A backbone that zeroes pads and returns its input, to test pooling in isolation."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(x.size(1))[None, :] < lengths[:, None]
        return x * mask[..., None]


def test_masked_mean_ignores_pads() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    torch.testing.assert_close(masked_mean(x, torch.tensor([2, 3])), torch.tensor([[2.0], [4.0]]))


@pytest.mark.parametrize("pooling", ["mean", "cls", "sum", "last"])
def test_logits_do_not_depend_on_padding(pooling: str) -> None:
    torch.manual_seed(0)
    backbone = TransformerEncoder(16, 1, 2, 32, dropout=0.0, attn_dropout=0.0, max_length=32)
    net = SequenceClassifier(backbone, 16, 5, vocab_size=10, pooling=pooling, head_hidden=8).eval()
    tokens = torch.randint(1, 10, (1, 6))
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(net(tokens, torch.tensor([6])), net(padded, torch.tensor([6])), atol=1e-5, rtol=1e-5)


def test_pair_mode_concatenates_u_v_or_nli_features() -> None:
    torch.manual_seed(0)
    for features, width in (("concat", 2), ("nli", 4)):
        net = SequenceClassifier(Identity(), 8, 2, vocab_size=10, pair=True, pair_features=features, head_hidden=0)
        assert net.head.net[-1].in_features == 8 * width
        t1, t2 = torch.randint(1, 10, (3, 5)), torch.randint(1, 10, (3, 7))
        logits = net(t1, torch.tensor([5, 4, 3]), t2, torch.tensor([7, 7, 2]))
        assert logits.shape == (3, 2)
        u = masked_mean(net.embedding(t1), torch.tensor([5, 4, 3]))
        v = masked_mean(net.embedding(t2), torch.tensor([7, 7, 2]))
        feats = torch.cat([u, v] if features == "concat" else [u, v, u * v, u - v], -1)
        torch.testing.assert_close(logits, net.head(feats))
    with pytest.raises(ValueError, match="tokens2"):
        net(t1, torch.tensor([5, 4, 3]))


def test_token_embedding_init_std_is_configurable() -> None:
    torch.manual_seed(0)
    lra = SequenceClassifier(Identity(), 256, 2, vocab_size=5000, embed_init_std=1.0)
    mega = SequenceClassifier(Identity(), 256, 2, vocab_size=5000, embed_init_std=None)
    assert lra.embedding.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert mega.embedding.weight.std().item() == pytest.approx(256**-0.5, rel=0.05)


def test_last_pooling_reads_each_rows_last_real_position() -> None:
    """S4's ``mode: last`` decoder (d589d98 Pathfinder): per row the output at lengths - 1, never a pad."""
    net = SequenceClassifier(Identity(), 4, 2, vocab_size=10, pooling="last", head_hidden=0)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 1]])
    lengths = torch.tensor([3, 5])
    emb = net.embedding(tokens)
    torch.testing.assert_close(net.encode(tokens, lengths), torch.stack([emb[0, 2], emb[1, 4]]))
    torch.testing.assert_close(net.encode(tokens[:1, :3], lengths[:1]), emb[:1, 2])  # the same row unpadded


def test_lecun_onehot_embedding_is_flax_dense_on_one_hot_tokens() -> None:
    """S5 / minimal-LRU: one_hot(tokens, in_dim) -> flax nn.Dense: lecun_normal rows (truncated at +-2 raw sd,
    sd in_dim^-1/2) and a zero bias shared by every token."""
    torch.manual_seed(0)
    for fan_in in (None, 20):
        net = SequenceClassifier(Identity(), 2000, 2, vocab_size=18, embed_init="lecun_onehot", embed_fan_in=fan_in)
        emb, sd = net.embedding, (fan_in or 18) ** -0.5
        assert emb.weight.std().item() == pytest.approx(sd, rel=0.02)
        assert emb.weight.abs().max().item() <= 2 * sd / 0.87962566103423978 + 1e-6  # truncated at 2 raw sd
        assert emb.weight.abs().max().item() > 1.9 * sd / 0.87962566103423978  # ... and not narrower
        assert torch.equal(emb.bias, torch.zeros(2000)) and emb.bias.requires_grad
        tokens = torch.tensor([[1, 5, 17]])
        with torch.no_grad():
            emb.bias.add_(1.0)
        one_hot = torch.nn.functional.one_hot(tokens, 18).float()
        torch.testing.assert_close(emb(tokens), one_hot @ emb.weight + emb.bias)  # Dense(one_hot) = row + bias
    with pytest.raises(ValueError, match="embed_fan_in=10"):
        SequenceClassifier(Identity(), 8, 2, vocab_size=18, embed_init="lecun_onehot", embed_fan_in=10)
    with pytest.raises(ValueError, match="embed_init"):
        SequenceClassifier(Identity(), 8, 2, vocab_size=18, embed_init="xavier")


def test_real_number_embedding_normalises_pixels() -> None:
    net = SequenceClassifier(Identity(), 4, 2, input="real", pixel_mean=0.5, pixel_std=0.5)
    emb = net.embedding
    out = emb(torch.tensor([[0, 255]]))
    torch.testing.assert_close(out[0, 0], -1.0 * emb.weight + emb.bias)
    torch.testing.assert_close(out[0, 1], 1.0 * emb.weight + emb.bias)


def test_bad_options_name_the_option() -> None:
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(Identity(), 4, 2, vocab_size=5, pooling="max")
    with pytest.raises(ValueError, match="input"):
        SequenceClassifier(Identity(), 4, 2, vocab_size=5, input="pixels")


def tiny_backbones() -> dict[str, nn.Module]:
    from lra_bench.models.mega.mega import MegaEncoder
    from lra_bench.models.ssm.s4 import S4Encoder

    return {
        "transformer": TransformerEncoder(16, 2, 2, 32, dropout=0.0, attn_dropout=0.0, max_length=64),
        "mega_chunk": MegaEncoder(16, 2, 32, 32, 8, 4, 4, 64, "softmax", "simple", 64, "layernorm", False),
        "s4_batchnorm": S4Encoder(16, n_layers=2, d_state=4, norm="batch"),
        "s4d": S4Encoder(16, n_layers=2, d_state=4, mode="diag", norm="layer"),
    }


@pytest.mark.parametrize("name", ["transformer", "mega_chunk", "s4_batchnorm", "s4d"])
def test_a_pair_in_one_pass_equals_two_passes_in_eval_mode(name: str) -> None:
    """Both documents run as one batch of 2B rows (S4's pair batching); in eval mode that is exactly two passes."""
    torch.manual_seed(0)
    net = SequenceClassifier(tiny_backbones()[name], 16, 2, vocab_size=30, pair=True, pair_features="nli", head_hidden=8)
    net.train()
    net(torch.randint(1, 30, (4, 11)), torch.tensor([11, 9, 4, 7]), torch.randint(1, 30, (4, 6)), torch.tensor([6, 6, 2, 5]))
    net.eval()  # BatchNorm now uses its running statistics
    t1, l1 = torch.randint(1, 30, (3, 13)), torch.tensor([13, 5, 9])
    t2, l2 = torch.randint(1, 30, (3, 8)), torch.tensor([8, 8, 3])
    with torch.no_grad():
        one_pass = net(t1, l1, t2, l2)
        u, v = net.encode(t1, l1), net.encode(t2, l2)
        two_pass = net.head(torch.cat([u, v, u * v, u - v], -1))
    torch.testing.assert_close(one_pass, two_pass, atol=1e-5, rtol=1e-5)


def test_first_pooling_reads_position_zero_without_adding_a_token() -> None:
    net = SequenceClassifier(Identity(), 4, 2, vocab_size=10, pooling="first", head_hidden=0)
    tokens = torch.tensor([[3, 4, 5]])
    assert net.cls is None
    torch.testing.assert_close(net.encode(tokens, torch.tensor([3])), net.embedding(tokens)[:, 0])


def test_luna_retrieval_form_prepends_a_cls_token_to_each_document_and_classifies_nli_features() -> None:
    """fairseq-apollo's Luna Retrieval (the lra-text task prepends <CLS> to src and src1; LRAModel classifies
    dropout([u, v, u*v, u-v]) with one Linear(4D, classes, bias=False)): pooling cls + pair_features nli +
    head_hidden 0 + head_out_bias false."""
    from lra_bench.models.attention.luna import LunaEncoder

    torch.manual_seed(0)
    backbone = LunaEncoder(16, n_layers=1, n_heads=2, d_ff=32, proj_length=4, dropout=0.0, attn_dropout=0.0, max_length=32)
    net = SequenceClassifier(backbone, 16, 2, vocab_size=30, pooling="cls", pair=True, pair_features="nli",
                             head_hidden=0, head_dropout=0.1, head_out_bias=False).eval()
    head = [m for m in net.head.net if isinstance(m, nn.Linear)]
    assert len(head) == 1 and head[0].bias is None and head[0].in_features == 4 * 16
    assert isinstance(net.head.net[0], nn.Dropout) and net.head.net[0].p == 0.1
    t1, l1 = torch.randint(1, 30, (2, 9)), torch.tensor([9, 5])
    t2, l2 = torch.randint(1, 30, (2, 6)), torch.tensor([6, 3])

    def by_hand(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # CLS in front of each document
        x = torch.cat([net.cls.expand(tokens.size(0), 1, -1), net.embedding(tokens)], dim=1)
        return backbone(x, lengths + 1)[:, 0]

    with torch.no_grad():
        u, v = by_hand(t1, l1), by_hand(t2, l2)
        torch.testing.assert_close(net(t1, l1, t2, l2), head[0](torch.cat([u, v, u * v, u - v], -1)), atol=1e-5, rtol=1e-5)
