"""Checks every attention mechanism's tests share: padding and masked holes change nothing at attended positions,
the whole encoder trains at an odd length, nothing (L, L) is kept for backward, a preset differs from the
Transformer's only where LRA's config does."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import OmegaConf

from lra_bench.models.attention.transformer import TransformerEncoder
from tests.conftest import compose_config


def assert_padding_is_ignored(attn: Callable, d_model: int, length: int, pads: tuple[int, ...], scale: float,
                              rtol: float = 1e-12, mask_alone: bool = True) -> None:
    """Outputs at the ``length`` real positions of a float64 row are those of the row alone (mask all True, or None
    with ``mask_alone=False``), whatever the amount of right padding (``pads``) and its values (``scale`` x normal)."""
    x = torch.randn(1, length, d_model, dtype=torch.float64)
    alone = attn(x, torch.ones(1, length, dtype=torch.bool) if mask_alone else None)
    for pad in pads:
        padded = torch.cat([x, scale * torch.randn(1, pad, d_model, dtype=torch.float64)], dim=1)
        mask = torch.arange(length + pad)[None] < length
        torch.testing.assert_close(attn(padded, mask)[:, :length], alone, atol=1e-12, rtol=rtol)


def assert_holes_do_not_reach_other_positions(attn: Callable, d_model: int, batch: int, length: int,
                                              holes: list[int], scale: float, rtol: float = 1e-12
                                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values at masked positions (``holes``, ``scale`` x normal) leave every unmasked output unchanged; returns the
    two inputs and the mask (x, y with the holes rewritten, mask)."""
    x = torch.randn(batch, length, d_model, dtype=torch.float64)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, holes] = False
    y = x.clone()
    y[:, holes] = scale * torch.randn(batch, len(holes), d_model, dtype=torch.float64)
    torch.testing.assert_close(attn(y, mask)[mask], attn(x, mask)[mask], atol=1e-12, rtol=rtol)
    return x, y, mask


def assert_padding_and_a_hole_change_nothing(attn: Callable, d_model: int, hole: int, pad: int, length: int = 21) -> None:
    """With a hole (a masked pixel) at ``hole``: ``pad`` extra pad positions with large values, and the hole's own
    value, leave every attended output of a float64 row unchanged."""
    x = torch.randn(1, length, d_model, dtype=torch.float64)
    mask = torch.ones(1, length, dtype=torch.bool)
    mask[0, hole] = False
    alone = attn(x, mask)
    padded_x = torch.cat([x, 1e3 * torch.randn(1, pad, d_model, dtype=torch.float64)], dim=1)
    padded = attn(padded_x, torch.cat([mask, torch.zeros(1, pad, dtype=torch.bool)], dim=1))[:, :length]
    torch.testing.assert_close(padded[mask], alone[mask], atol=1e-12, rtol=1e-12)
    changed = x.clone()
    changed[0, hole] += 100.0  # the hole's own value: hidden from every other position
    torch.testing.assert_close(attn(changed, mask)[mask], alone[mask], atol=1e-12, rtol=1e-12)


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
    """The training setup (task, model, optimiser, schedule, trainer) less the mechanism."""
    d = OmegaConf.to_container(cfg, resolve=True)
    del d["model"]["name"], d["model"]["net"]["backbone"]["attention"]
    return {key: d[key] for key in ("task", "model", "optimizer", "scheduler", "trainer")}
