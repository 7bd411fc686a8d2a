"""Our Mamba layer beside the ``mambapy`` package's (``mambapy.mamba.ResidualBlock``), weights matched.

One pre-norm residual layer, RMSNorm + Mamba mixer, unidirectional (mambapy has no bidirectional form), with
the official defaults: expand 2, d_state 16, d_conv 4, dt_rank ceil(D / 16), no in/out bias. mambapy computes
the selective scan with its parallel scan (``pscan``) over the whole (B, L, E, N) tensor; ours with the chunked
scan of ``lra_bench/models/ssm/selective_scan.py``. Our parameters ``mixer.fwd.{conv1d, x_proj, dt_proj, A_log,
D}`` are mambapy's ``mixer.{...}``; everything else has the same name, so the two compute the same function.
``n_heads`` is unused (Mamba has no heads).
"""

from __future__ import annotations

import torch
from torch import nn

from lra_bench.models.ssm.mamba import MambaLayer, MambaMixer

REFERENCE = "mambapy==1.2.0"


class UnpaddedLayer(nn.Module):
    """Our ``MambaLayer`` as x (B, L, D) -> (B, L, D) over an unpadded batch (every length = L)."""

    def __init__(self, layer: MambaLayer):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, torch.full((x.size(0),), x.size(1), device=x.device))


def match_weights(ours: MambaLayer, theirs: nn.Module) -> None:
    """Copy ours into mambapy's ``ResidualBlock`` (names: ``mixer.fwd.X`` -> ``mixer.X``)."""
    state = {(k.replace("mixer.fwd.", "mixer.") if k.startswith("mixer.fwd.") else k): v
             for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)


def build(length: int, d_model: int, n_heads: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(ours, theirs): one unidirectional Mamba layer each, mapping x (B, L, D) -> (B, L, D); ``length`` unused."""
    from mambapy.mamba import MambaConfig, ResidualBlock

    torch.manual_seed(seed)
    ours = MambaLayer(d_model, MambaMixer(d_model, bidirectional=False), norm="rms", norm_eps=1e-5, dropout=0.0)
    theirs = ResidualBlock(MambaConfig(d_model=d_model, n_layers=1, pscan=True))
    match_weights(ours, theirs)
    return UnpaddedLayer(ours), theirs
