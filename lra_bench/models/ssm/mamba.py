"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"), bidirectional for LRA.

One mixer, on x: (B, L, D), with E = expand * D channels inside (expand 2), N = d_state (16), R = dt_rank:

    (x, z)   = in_proj(x)                                  (B, L, E) each
    x        = SiLU(causal depthwise conv1d(x))            kernel d_conv = 4, left-padded
    (dt, B, C) = x_proj(x)                                 (B, L, R), (B, L, N), (B, L, N)
    Delta    = softplus(dt_proj(dt))                       low rank R = ceil(D / 16), bias init so that
                                                           softplus(bias) ~ log-uniform[dt_min, dt_max]
    h_t      = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t    A = -exp(A_log), S4D-real init A_n = -(n + 1)
    y_t      = C_t . h_t + D x_t                           (selective_scan.py)
    out      = out_proj(y * SiLU(z))

and a residual block per layer as the official ``Block`` with pre-norm: x <- x + mixer(RMSNorm(x)), and a
final RMSNorm (the official ``MixerModel``'s ``norm_f``). Cost O(L E N log T) time, O(L E) memory (chunked scan).

Reference: state-spaces/mamba ``mamba_ssm/modules/mamba_simple.py`` (``Mamba``: parameters, inits, forward
without the fused kernels) and ``mamba_ssm/models/mixer_seq_simple.py`` (``create_block``, ``_init_weights``:
out_proj rescaled by 1/sqrt(n_layers), ``MixerModel``'s final norm). Parameter names follow ``Mamba``:
``layers.<i>.mixer.{in_proj, out_proj}`` are ``in_proj``/``out_proj``, ``layers.<i>.mixer.fwd.{conv1d, x_proj,
dt_proj, A_log, D}`` are the same names there, ``layers.<i>.norm`` is ``Block.norm``, ``norm_f`` is ``norm_f``.

Bidirectional (LRA; Mamba has no official bidirectional form or LRA configuration): Caduceus's ``BiMambaWrapper``
with its default ``bidirectional_weight_tie=True`` and ``bidirectional_strategy="add"`` (kuleshov-group/caduceus
``caduceus/modeling_caduceus.py``), which is also Vision Mamba's "v2" layout (hustvl/Vim
``mamba-1p1p1/mamba_ssm/modules/mamba_simple.py``, ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``,
``D_b``: here ``mixer.bwd.*``): in_proj and out_proj are shared, the backward direction has its own conv1d,
x_proj, dt_proj, A_log and D and reads the sequence reversed, and the two directions are summed,

    out = out_proj((y_fwd + reverse(y_bwd(reverse(x)))) * SiLU(z))

(tied projections without bias make Caduceus's out_proj(y_f * SiLU(z)) + flip(out_proj(y_b * SiLU(z_rev)))
exactly this). Why: the projections hold most of a layer's parameters (84-90% at the LRA widths), so tying
them keeps a layer near the size of a unidirectional Mamba (+10-16% instead of +100%) and leaves the width
free to match S4's parameter budget; the untied SSM parts give each direction its own Delta, B, C (its own
selectivity) and its own memory. Computing in_proj once also saves the second projection of the input. Vision Mamba averages the
two directions (``if_devide_out``); Caduceus sums them, as here.

Padding. Batches are right-padded. The forward direction is causal, so real positions never see the pads
after them. The backward direction reverses each row within its own length (position t <-> length - 1 - t),
not the padded tensor, so it too starts at the row's last real position and its pads stay at the end: its
causal conv and scan never see them either. Pads are zeroed at the input (garbage there never reaches a
computation that could make NaNs) and in the output.

Differences from the official code: no fused kernels on CPU (mamba_ssm's ``selective_scan_fn`` and
causal_conv1d are used on CUDA when installed, with the same outputs); time-major layout; an optional
dropout on each mixer output before the residual add (0 by default; the official block has none; the S4
image preset uses 0.1); ``norm`` "rms" (official default) or "layer" (official ``rms_norm=False``); weight decay
0 on A_log and D (the official ``_no_weight_decay``) and, as the S4 recipe this project trains with does for its
backbones, on biases and norm weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.masks import length_mask
from lra_bench.models.norms import RMSNorm
from lra_bench.models.ssm.selective_scan import selective_scan


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x: (B, L, ...) with row b's position t < lengths[b] moved to lengths[b] - 1 - t; pads stay where they are.

    Its own inverse. Rows without pads are plainly flipped.
    """
    L = x.size(1)
    if bool((lengths == L).all()):
        return x.flip(1)
    t = torch.arange(L, device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, L)
    return x[torch.arange(x.size(0), device=x.device)[:, None], index]


def _causal_conv1d_cuda(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor | None:
    """causal_conv1d's fused conv + SiLU on (B, E, L) if the package is there and x is on CUDA, else None."""
    if not x.is_cuda:
        return None
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    return causal_conv1d_fn(x.contiguous(), conv.weight.squeeze(1), conv.bias, activation="silu")


class SelectiveSSM(nn.Module):
    """One direction's conv1d -> SiLU -> (Delta, B, C) -> selective scan + D skip, on x: (B, L, E) -> (B, L, E).

    Parameters as ``mamba_simple.Mamba``: conv1d, x_proj, dt_proj (weight U(+-dt_scale / sqrt(R)), bias the
    inverse softplus of dt ~ log-uniform[dt_min, dt_max] floored at dt_init_floor), A_log = log(n + 1), D = 1.
    """

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int, dt_min: float, dt_max: float,
                 dt_init_floor: float, dt_scale: float, conv_bias: bool, chunk: int):
        super().__init__()
        self.d_state, self.dt_rank, self.chunk = d_state, dt_rank, chunk
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        std = dt_rank**-0.5 * dt_scale  # preserves the variance of Delta's pre-activation at init
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.size(1)
        xt = x.transpose(1, 2)  # (B, E, L)
        conv = _causal_conv1d_cuda(xt, self.conv1d)
        x = (conv if conv is not None else F.silu(self.conv1d(xt)[..., :L])).transpose(1, 2)  # causal: first L
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)  # bias and softplus inside the scan, as the official kernel
        A = -torch.exp(self.A_log.float())
        return selective_scan(x, delta, A, B, C, self.D.float(), delta_bias=self.dt_proj.bias.float(),
                              delta_softplus=True, chunk=self.chunk)


class MambaMixer(nn.Module):
    """in_proj -> (forward SSM [+ backward SSM on the rows reversed within their lengths]) * SiLU(z) -> out_proj."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0,
                 conv_bias: bool = True, bias: bool = False, bidirectional: bool = True, chunk: int = 32):
        super().__init__()
        d_inner = expand * d_model
        dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        ssm = dict(d_inner=d_inner, d_state=d_state, d_conv=d_conv, dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max,
                   dt_init_floor=dt_init_floor, dt_scale=dt_scale, conv_bias=conv_bias, chunk=chunk)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.fwd = SelectiveSSM(**ssm)
        self.bwd = SelectiveSSM(**ssm) if bidirectional else None
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D), lengths: (B,) -> (B, L, D); outputs at real positions never depend on pads."""
        u, z = self.in_proj(x).chunk(2, dim=-1)
        y = self.fwd(u)
        if self.bwd is not None:
            y = y + reverse_within_lengths(self.bwd(reverse_within_lengths(u, lengths)), lengths)
        return self.out_proj(y * F.silu(z))


class MambaLayer(nn.Module):
    """The official pre-norm ``Block``: x + Dropout(mixer(Norm(x)))."""

    def __init__(self, d_model: int, mixer: MambaMixer, norm: str, norm_eps: float, dropout: float):
        super().__init__()
        self.norm = _make_norm(norm, d_model, norm_eps)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x), lengths))


def _make_norm(kind: str, d_model: int, eps: float) -> nn.Module:
    if kind == "rms":
        return RMSNorm(d_model, eps)
    if kind == "layer":
        return nn.LayerNorm(d_model, eps=eps)
    raise ValueError(f"Mamba's norm must be rms or layer (official rms_norm=True/False), got {kind!r}")


class MambaEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``: n_layers Mamba blocks and a final norm.

    ``dt_rank`` None = ceil(d_model / 16) (official "auto"); ``chunk``: steps per chunk of the CPU scan
    (memory and speed only, not the result).
    """

    def __init__(self, d_model: int, n_layers: int = 6, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4,
                 dt_scale: float = 1.0, conv_bias: bool = True, bias: bool = False, bidirectional: bool = True,
                 norm: str = "rms", norm_eps: float = 1e-5, dropout: float = 0.0, chunk: int = 32):
        super().__init__()
        self.layers = nn.ModuleList(
            MambaLayer(d_model, MambaMixer(d_model, d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init_floor,
                                           dt_scale, conv_bias, bias, bidirectional, chunk), norm, norm_eps, dropout)
            for _ in range(n_layers))
        self.norm_f = _make_norm(norm, d_model, norm_eps)
        with torch.no_grad():  # official _init_weights(rescale_prenorm_residual): one residual branch per layer
            for layer in self.layers:
                layer.mixer.out_proj.weight /= math.sqrt(n_layers)
        for name, p in self.named_parameters():
            # A_log and D: the official _no_weight_decay; biases and norm weights: the S4 recipe's backbone rule
            if name.endswith(("A_log", ".D", "bias")) or ".norm." in f".{name}" or name.startswith("norm_f."):
                p._optim = {"weight_decay": 0.0}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[..., None]  # (B, L, 1)
        x = torch.where(keep, x, 0.0)  # where, not *: NaN or inf in pads must not survive as NaN
        for layer in self.layers:
            x = layer(x, lengths)
        return torch.where(keep, self.norm_f(x), 0.0)
