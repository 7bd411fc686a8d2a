"""Checks the diagonal recurrences' tests share (S5, LRU): pads never reach a real position, a bidirectional layer
sees both sides, every parameter of a classifier around the stack gets a gradient; and flax's GELU and Dense
restated in numpy for the layers around the cores (both originals are flax)."""

from __future__ import annotations

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.classifier import SequenceClassifier
from tests.conftest import compose_config


def with_nontrivial_norm_stats(enc: nn.Module) -> nn.Module:
    """``enc`` in eval mode with every layer's BatchNorm mapping 0 to a non-zero value, so a pad that reached a scan
    would show."""
    with torch.no_grad():
        for layer in enc.layers:
            layer.norm.norm.running_mean.uniform_(-1, 1)
            layer.norm.norm.running_var.uniform_(0.5, 2)
            layer.norm.norm.bias.uniform_(-1, 1)
    return enc.eval()


def assert_real_positions_ignore_padding(enc: nn.Module, d_model: int = 8) -> None:
    """A row of 20 alone, right-padded with 13 large values, and beside a longer row: the same outputs at its 20 real
    positions, zeros at its pads."""
    x = torch.randn(1, 20, d_model)
    with torch.no_grad():
        alone = enc(x, torch.tensor([20]))
        padded = enc(torch.cat([x, 5 * torch.randn(1, 13, d_model)], 1), torch.tensor([20]))
        batch = enc(torch.cat([torch.cat([x, torch.randn(1, 13, d_model)], 1), torch.randn(1, 33, d_model)]),
                    torch.tensor([20, 33]))
    torch.testing.assert_close(padded[:, :20], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch[:1, :20], alone, atol=1e-5, rtol=1e-4)
    assert (padded[:, 20:] == 0).all() and (batch[0, 20:] == 0).all()


def assert_sees_the_past_only_unless_bidirectional(layer: nn.Module, bidirectional: bool) -> None:
    """An impulse at t = 20 of a float64 (1, 40, 3) input reaches every later output, and an earlier one only when
    ``bidirectional``."""
    u = torch.zeros(1, 40, 3, dtype=torch.float64)
    u[0, 20] = 1.0
    with torch.no_grad():
        y = layer(u)[0]
    assert y[21:].abs().sum() > 0
    assert (y[:20].abs().sum() > 0) == bidirectional


def assert_every_parameter_gets_a_finite_gradient(enc: nn.Module, d_model: int = 8) -> None:
    """Every parameter of a classifier around ``enc`` gets a finite gradient from one batch of three lengths, and a
    non-zero one inside the sequence layers (``.seq.``)."""
    net = SequenceClassifier(enc, d_model, 3, vocab_size=11)
    tokens = torch.randint(1, 11, (3, 25))
    F.cross_entropy(net(tokens, torch.tensor([25, 17, 9])), torch.tensor([0, 1, 2])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if ".seq." in name:
            assert p.grad.abs().sum() > 0, name


def flax_gelu(x: np.ndarray) -> np.ndarray:
    """flax ``nn.gelu`` (jax.nn.gelu, approximate=True by default): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def flax_dense_apply(layer: nn.Linear, x: np.ndarray) -> np.ndarray:
    """flax ``nn.Dense`` with ``layer``'s weights (kernel = weight^T): x @ kernel + bias."""
    return x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()


def assert_flax_dense_init(layer: nn.Linear, fan_in: int) -> None:
    """flax ``nn.Dense``'s init: lecun_normal kernel (a normal truncated at +-2 sd, rescaled to sd fan_in^-1/2) and a
    zero bias. PyTorch's default Linear (uniform, sd (3 fan_in)^-1/2, nonzero bias) fails every line."""
    w = layer.weight.detach().double()
    sd = fan_in**-0.5
    assert abs(float(w.std()) - sd) / sd < 0.05, float(w.std())
    assert float(w.abs().max()) <= 2 * sd / 0.87962566103423978 + 1e-6  # the truncation at 2 (pre-rescale) sd
    assert bool((layer.bias == 0).all())


def assert_token_preset_embeds_one_hot_tokens_with_a_flax_dense(model: str, task: str, fan_in: int | None) -> None:
    """S5 and minimal-LRU feed one_hot(tokens, in_dim) into a flax ``nn.Dense``: lecun-normal rows of sd in_dim^-1/2
    and a zero bias. ``fan_in`` is the preset's ``embed_fan_in`` (None: the vocabulary, here 135)."""
    torch.manual_seed(0)
    overrides = ["model.net.backbone.n_layers=1"]  # only the embedding counts here
    overrides += [] if task == "listops" else ["task.vocab_size=135"]
    cfg = compose_config([f"experiment=lra/{model}-{task}", "paths.output_dir=/tmp/lra_bench_presets", *overrides])
    assert (cfg.model.net.embed_init, cfg.model.net.embed_fan_in) == ("lecun_onehot", fan_in)
    net = hydra.utils.instantiate(cfg.model.net)
    assert_flax_dense_init(net.embedding, fan_in or cfg.task.vocab_size)
