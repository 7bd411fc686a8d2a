"""Checks every attention mechanism's tests share: the whole encoder trains at an odd length, nothing (L, L) is
kept for backward, a preset differs from the Transformer's only where LRA's config does."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import OmegaConf

from lra_bench.models.attention.transformer import TransformerEncoder
from tests.conftest import compose_config


def assert_encoder_trains_at_an_odd_length(attention: Callable, d_model: int = 16, n_heads: int = 2, length: int = 37,
                                           short: int = 21, max_length: int = 64) -> TransformerEncoder:
    """TransformerEncoder with ``attention`` builds, runs forward and backward at a length that is no block multiple,
    zeroes the pads of the shorter row, and every parameter gets a finite gradient."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(d_model=d_model, n_layers=2, n_heads=n_heads, d_ff=32, max_length=max_length,
                                 attention=attention)
    out = encoder(torch.randn(2, length, d_model), torch.tensor([length, short]))
    assert out.shape == (2, length, d_model) and (out[1, short:] == 0).all()
    out.square().sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    return encoder


def assert_nothing_quadratic_is_kept(attention: torch.nn.Module, length: int = 16_384, d_model: int = 256) -> None:
    """Every tensor saved for backward at L = ``length`` (batch 1) is (L, D)-sized at most, never (L, L)."""
    torch.manual_seed(0)
    largest: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: largest.append(t.numel()) or t, lambda t: t):
        attention.train()(torch.randn(1, length, d_model), torch.arange(length)[None] < length - 5).sum().backward()
    assert max(largest) <= 4 * length * d_model  # (L, L) would be length^2 elements


def compose(experiment: str):
    return compose_config([f"experiment=lra/{experiment}", "paths.output_dir=/tmp/lra_bench_presets"])


def without_attention(cfg) -> dict:
    """The training setup (task, model, optimiser, schedule, trainer) less the mechanism and its mask option."""
    d = OmegaConf.to_container(cfg, resolve=True)
    del d["model"]["name"], d["model"]["net"]["backbone"]["attention"]
    d["model"]["net"].pop("mask_zero_inputs", None)
    return {key: d[key] for key in ("task", "model", "optimizer", "scheduler", "trainer")}
