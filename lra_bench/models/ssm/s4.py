"""S4 (DPLR, LegS) and S4D (diagonal) backbones (state-spaces/s4 models/s4/s4.py and
src/models/sequence/modules/s4block.py), kernels in ``s4_kernels.py``.

Layer order (state-spaces/s4 ``S4Block`` in an LRA residual block):

    x = x * pad_mask                                  pads zeroed at every layer input (and after the norm)
    z = Norm(x) if prenorm else x
    z = FFTConv(z) = K * z + D z                      FFT padded to 2L: no wrap-around
    z = Linear(H -> 2H)(DropoutNd(GELU(z)))  -> GLU   S4's DropoutNd: tied over the sequence
    x = x + Dropout(z);  x = Norm(x) if postnorm      (prenorm adds a final norm)

Bidirectional (``bidirectional: true``, every LRA preset): two C's sharing A, B and Delta; the second
kernel runs backwards and starts one step ahead (it sees u[t+1:], not u[t]: S4's deliberate off-by-one,
unlike Mega's, whose backward EMA includes lag 0).

LRA uses BatchNorm, whose statistics include the zeroed pads (as S4's code does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.dropout import TiedDropout
from lra_bench.models.masks import length_mask
from lra_bench.models.ssm.s4_kernels import SSMKernelDiag, SSMKernelDPLR


class FFTConv(nn.Module):
    """y = K * u + D u over (B, H, L), the kernel from S4 (``mode: dplr``) or S4D (``mode: diag``)."""

    def __init__(self, d_model: int, d_state: int = 64, mode: str = "dplr", bidirectional: bool = True,
                 init: str = "legs", disc: str = "zoh", n_ssm: int | None = 1, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, dt_transform: str = "softplus", lr: dict | None = None, chunk: int = 256,
                 b_clip: float | None = 2.0, c_init: str = "normal"):
        super().__init__()
        self.bidirectional = bidirectional
        channels = 2 if bidirectional else 1
        if mode == "dplr":
            if init != "legs":
                raise ValueError("S4 (mode dplr) uses the HiPPO-LegS init; S4D (mode diag) takes lin, inv or legs")
            if (b_clip, c_init) != (2.0, "normal"):
                raise ValueError(f"b_clip={b_clip} / c_init={c_init} are S4D options (mode diag); S4 (mode dplr) keeps 2.0 / normal")
            self.kernel: nn.Module = SSMKernelDPLR(d_model, d_state, channels, n_ssm, dt_min, dt_max, dt_transform, lr, chunk)
        elif mode == "diag":
            self.kernel = SSMKernelDiag(d_model, d_state, channels, init, disc, n_ssm, dt_min, dt_max, dt_transform, lr,
                                        b_clip, c_init)
        else:
            raise ValueError(f"mode must be dplr (S4) or diag (S4D), got {mode!r}")
        self.D = nn.Parameter(torch.randn(d_model))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, H, L) -> (B, H, L)."""
        L = u.size(-1)
        k = self.kernel(L)  # (channels, H, L)
        if self.bidirectional:
            # taps 0..L-1 forward; backward tap j-1 applied to u[t + j], j = 1..L, laid out after the zeros
            k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))
        else:
            k = k[0]
        n = 2 * L  # linear convolution: no wrap-around into the past or the future
        y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k.float(), n=n), n=n)[..., :L]
        return y.to(u.dtype) + u * self.D[:, None]


class S4Block(nn.Module):
    """FFTConv -> GELU -> DropoutNd -> Linear(H, 2H) -> GLU, on (B, H, L)."""

    def __init__(self, d_model: int, dropout: float = 0.0, **conv: object):
        super().__init__()
        self.conv = FFTConv(d_model, **conv)
        self.dropout = TiedDropout(dropout, seq_dim=-1)
        self.output_linear = nn.Linear(d_model, 2 * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.gelu(self.conv(x)))
        return F.glu(self.output_linear(y.transpose(1, 2)), dim=-1).transpose(1, 2)


class _Norm(nn.Module):
    """BatchNorm1d or LayerNorm over channels of a (B, H, L) tensor."""

    def __init__(self, kind: str, d_model: int):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"norm must be batch or layer, got {kind!r}")
        self.kind = kind
        self.norm = nn.BatchNorm1d(d_model) if kind == "batch" else nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.kind == "batch" else self.norm(x.transpose(1, 2)).transpose(1, 2)


class S4Encoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)`` of residual S4 / S4D blocks.

    ``lr``: the SSM learning rates, {dt, A, B, C} (None = the global lr), e.g. S4's dict form
    {dt: null, A: 1e-3, B: 1e-3, C: null} or its scalar form 1e-3 for all four. Biases and norm weights of
    the backbone get weight decay 0 (S4's ``add_optimizer_hooks``, train.optimizer_param_grouping at HEAD), unless
    ``decay_norm_bias``: the global weight decay, as at d589d98, whose config.yaml set no grouping (train.py:456).
    ``b_clip`` / ``c_init``: S4D's init as at HEAD (2.0 / normal) or as at d589d98 (null / normal_times_b).
    """

    def __init__(self, d_model: int, n_layers: int = 6, d_state: int = 64, mode: str = "dplr", bidirectional: bool = True,
                 init: str = "legs", disc: str = "zoh", n_ssm: int | None = 1, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_transform: str = "softplus", lr: dict | float | None = None, dropout: float = 0.0,
                 norm: str = "batch", prenorm: bool = True, chunk: int = 256, decay_norm_bias: bool = False,
                 b_clip: float | None = 2.0, c_init: str = "normal"):
        super().__init__()
        if isinstance(lr, (int, float)):
            lr = {"dt": lr, "A": lr, "B": lr, "C": lr}
        lr = dict(lr) if lr is not None else None
        self.prenorm = prenorm
        conv = dict(d_state=d_state, mode=mode, bidirectional=bidirectional, init=init, disc=disc, n_ssm=n_ssm,
                    dt_min=dt_min, dt_max=dt_max, dt_transform=dt_transform, lr=lr, chunk=chunk,
                    b_clip=b_clip, c_init=c_init)
        self.layers = nn.ModuleList(S4Block(d_model, dropout, **conv) for _ in range(n_layers))
        self.norms = nn.ModuleList(_Norm(norm, d_model) for _ in range(n_layers))
        self.dropout = TiedDropout(dropout, seq_dim=-1)
        self.final_norm = _Norm(norm, d_model) if prenorm else None
        if not decay_norm_bias:
            for name, p in self.named_parameters():
                if not hasattr(p, "_optim") and (name.endswith("bias") or ".norm." in f".{name}"
                                                 or name.startswith(("norms.", "final_norm."))):
                    p._optim = {"weight_decay": 0.0}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[:, None, :].to(x.dtype)  # (B, 1, L)
        x = x.transpose(1, 2)  # (B, H, L)
        for block, norm in zip(self.layers, self.norms):
            x = x * keep
            z = (norm(x) if self.prenorm else x) * keep  # a norm (BatchNorm in eval, a trained bias) is not 0 at pads
            x = x + self.dropout(block(z))
            if not self.prenorm:
                x = norm(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x * keep).transpose(1, 2)
