"""S5 (Smith, Warrington & Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023).

One MIMO diagonal SSM per layer, shared by all H channels (lindermanlab/S5 ``s5/ssm.py``, ``s5/ssm_init.py``,
``s5/layers.py``, ``s5/seq_model.py``):

    Lambda_bar = exp(Lambda Delta),  B_bar = Lambda^-1 (Lambda_bar - 1) B~        ZOH (or bilinear)
    x_k = Lambda_bar x_{k-1} + B_bar u_k,   y_k = 2 Re(C~ x_k) + D u_k             u, y: (L, H); x: (L, P/2)

Lambda (P/2,) complex are the eigenvalues of HiPPO-N (the normal part of HiPPO-LegS, real parts -1/2),
repeated over J diagonal blocks of size P/J; B~ = V^-1 B, C~ = C V with the block eigenvectors V; one
log-timescale per state, log Delta ~ U[log dt_min, log dt_max]. Conjugate symmetry (default) stores P/2 of the P
states and doubles the real part. Bidirectional (every LRA script): a second scan runs backwards in time over
the same Lambda_bar, B_bar u (it includes u_k, lag 0) with its own C2, y = 2 Re(C1 x_fwd + C2 x_bwd) + D u,
S5's ``bidirectional`` (C~ has P columns, P/2 per direction).

Cost: two (L, H) x (H, P) projections and the chunked scan (``scan.py``, O(L P T)); memory O(L P).

Layer (S5 ``SequenceLayer``): x + drop(act(SSM(norm(x)))) with prenorm (postnorm: norm after the sum), the
activation one of gelu / full_glu / half_glu1 / half_glu2 as S5 defines them, dropout tied over the sequence
(flax ``broadcast_dims=[0]``), BatchNorm or LayerNorm; no final norm after the stack (``StackedEncoderModel``).
GELU is flax's ``nn.gelu``, whose default is the tanh approximation (``s5/layers.py`` lines 69-82), and the gate
maps ``out1``/``out2`` are flax ``nn.Dense``: lecun_normal weights (truncated normal, sd H^-1/2) and zero bias
(``flax_dense`` here; PyTorch's ``nn.Linear`` default would give sd (3H)^-1/2 and a nonzero bias).

Parameter names are S5's: ``Lambda_re``, ``Lambda_im``, ``B`` (P/2, H, 2), ``C`` or ``C1``/``C2`` (H, P/2, 2),
``D``, ``log_step`` (P/2,) (S5: (P/2, 1)); layer ``seq`` (the SSM), ``norm``, ``out1``/``out2``.

Optimizer groups (S5 ``train_helpers.create_train_state``): ``lr`` is the global lr and the SSM lr is
lr / lr_factor (S5: lr = lr_factor * ssm_lr). Lambda always, log_step unless ``dt_global``, and B per
``opt_config`` get the SSM lr (``p._optim``):
  standard: B at SSM lr, no weight decay; C, D at lr with weight decay;   BandCdecay: B at SSM lr with weight decay;
  BfastandCdecay: B at lr with weight decay;                              noBCdecay: B, C, D at SSM lr, no decay.
Everything else (encoder, norms, GLU, decoder) is at lr with weight decay: S5's "norm" key never matches a
leaf, so its norms are decayed too.

Differences from the official code:
- Padding: pads are zeroed after the norm and before the SSM, so neither scan direction carries padding into
  real positions (S5 runs the backward scan through the pads' encoder bias). BatchNorm statistics include the
  zeroed pads, as the official code's (and this project's S4) do.
- The scan is the chunked one of ``scan.py`` instead of ``jax.lax.associative_scan``: the same values.
- ``bn_momentum`` takes S5's (flax) value m and is handed to PyTorch as 1 - m: the same running average.
- The classifier around the backbone is the project's shared one (``lra_bench/models/classifier.py``), not S5's
  flax Dense layers: tokens go through an embedding table initialised N(0, 1/H) where S5 applies a lecun_normal
  ``nn.Dense`` (sd V^-1/2, zero bias) to one-hot tokens, pixels through x w + b with w ~ N(0, 1), b ~ N(0, 0.1^2)
  where S5's Dense(1, H) has lecun sd 1 and zero bias; the decoder (and Retrieval's two-layer decoder,
  ``seq_model.py`` ``RetrievalDecoder``, whose GELU is tanh) are xavier_uniform Linear layers with exact GELU.
  These are shared by every model so that only the backbone differs between them.
- Schedule (presets): S5 warms up linearly from lr/W over W = warmup_end epochs of steps, then evaluates its
  cosine at the running step count over E - W epochs of steps, so it reaches 0 W steps before the end and stays
  there; here the warmup starts at 0 and the cosine ends exactly at the last step. The train loader drops its
  last partial batch as S5's (``task.datamodule.drop_last`` in the presets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.dropout import TiedDropout
from lra_bench.models.masks import length_mask
from lra_bench.models.ssm.s4_kernels import hippo_legs
from lra_bench.models.ssm.scan import CHUNK, scan_planes

C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
ACTIVATIONS = ("gelu", "full_glu", "half_glu1", "half_glu2")
OPT_CONFIGS = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")


# --- initialisation (float64) ------------------------------------------------------------------

def hippo_n_eig(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (n,) and eigenvectors (n, n) of HiPPO-N = HiPPO-LegS + P P^T (S5 ``make_DPLR_HiPPO``).

    -i S is Hermitian, so S = V diag(Lambda) V* with Lambda = -1/2 + i mu, mu from ``eigh`` in ascending order:
    the first n/2 have negative imaginary parts, the rest are their conjugates (S5 keeps the first half)."""
    A, _, P = hippo_legs(n)
    S = A + P[:, None] * P[None, :]
    mu, V = torch.linalg.eigh(S.to(torch.complex128) * -1j)
    return torch.diagonal(S).mean() + 1j * mu, V


def block_diag_init(d_state: int, blocks: int, conj_sym: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lambda (P',), V (P, P') and V^-1 = V* (P', P) for J = ``blocks`` copies of HiPPO-N of size P/J
    (S5 ``train.py``); P' = P/2 with conjugate symmetry."""
    if d_state % blocks or (d_state // blocks) % (2 if conj_sym else 1):
        raise ValueError(f"d_state={d_state} must split into {blocks} blocks of even size")
    size = d_state // blocks
    lam, V = hippo_n_eig(size)
    keep = size // 2 if conj_sym else size
    lam, V = lam[:keep], V[:, :keep]
    return lam.repeat(blocks), torch.block_diag(*[V] * blocks), torch.block_diag(*[V.conj().T] * blocks)


def lecun_normal(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    """JAX's ``lecun_normal``: a normal truncated at +-2 sd, rescaled to standard deviation fan_in^-1/2."""
    return nn.init.trunc_normal_(torch.empty(shape, dtype=torch.float64), 0.0, 1.0, -2.0, 2.0) * (
        fan_in**-0.5 / 0.87962566103423978)


def flax_dense(d_in: int, d_out: int) -> nn.Linear:
    """A Linear initialised as flax's ``nn.Dense``: lecun_normal weight (fan-in ``d_in``) and zero bias."""
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(lecun_normal((d_out, d_in), d_in))
        layer.bias.zero_()
    return layer


def init_c(kind: str, d_model: int, d_state: int, V: torch.Tensor, columns: int) -> torch.Tensor:
    """C~ (H, columns) complex. trunc_standard_normal: per row lecun over (1, P, 2), fan-in P; lecun_normal:
    over (H, P, 2), fan-in P H (JAX counts H as receptive field); both times V. complex_normal: N(0, 1/2)
    real and imaginary parts, not times V (S5 ``ssm.py`` / ``ssm_init.py``)."""
    if kind == "complex_normal":
        return torch.complex(*torch.randn(2, d_model, columns, dtype=torch.float64) * 0.5**0.5)
    fan_in = d_state if kind == "trunc_standard_normal" else d_state * d_model
    C = lecun_normal((d_model, d_state, 2), fan_in)
    return torch.complex(C[..., 0], C[..., 1]) @ V


# --- the SSM -------------------------------------------------------------------------------------

class S5SSM(nn.Module):
    """u: (B, L, H) -> y: (B, L, H) = 2 Re(C~ x) + D u (see the module docstring). Pads must be zero in u."""

    def __init__(self, d_model: int, d_state: int, blocks: int = 1, conj_sym: bool = True, bidirectional: bool = True,
                 C_init: str = "trunc_standard_normal", discretization: str = "zoh", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, clip_eigs: bool = False, step_rescale: float = 1.0, lr: float | None = None,
                 lr_factor: float = 1.0, opt_config: str = "standard", dt_global: bool = False,
                 chunk: int = CHUNK):
        super().__init__()
        if C_init not in C_INITS:
            raise ValueError(f"C_init must be one of {C_INITS}, got {C_init!r}")
        if discretization not in ("zoh", "bilinear"):
            raise ValueError(f"discretization must be zoh or bilinear, got {discretization!r}")
        if opt_config not in OPT_CONFIGS:
            raise ValueError(f"opt_config must be one of {OPT_CONFIGS}, got {opt_config!r}")
        self.H, self.conj_sym, self.bidirectional = d_model, conj_sym, bidirectional
        self.discretization, self.clip_eigs, self.step_rescale, self.chunk = discretization, clip_eigs, step_rescale, chunk
        lam, V, Vinv = block_diag_init(d_state, blocks, conj_sym)
        self.P = lam.numel()  # stored states
        B = Vinv @ lecun_normal((d_state, d_model), d_state).to(torch.complex128)  # (P', H), lecun fan-in P
        log_step = torch.rand(self.P, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

        self.Lambda_re = nn.Parameter(lam.real.float())
        self.Lambda_im = nn.Parameter(lam.imag.float())
        self.B = nn.Parameter(torch.view_as_real(B).float().contiguous())
        if C_init == "complex_normal":
            self.C = nn.Parameter(torch.view_as_real(init_c(C_init, d_model, d_state, V, self.P * (2 if bidirectional else 1))).float())
            self.C_names = ["C"]
        elif bidirectional:
            self.C1 = nn.Parameter(torch.view_as_real(init_c(C_init, d_model, d_state, V, self.P)).float())
            self.C2 = nn.Parameter(torch.view_as_real(init_c(C_init, d_model, d_state, V, self.P)).float())
            self.C_names = ["C1", "C2"]
        else:
            self.C = nn.Parameter(torch.view_as_real(init_c(C_init, d_model, d_state, V, self.P)).float())
            self.C_names = ["C"]
        self.D = nn.Parameter(torch.randn(d_model))
        self.log_step = nn.Parameter(log_step.float())
        self._set_optim(lr, lr_factor, opt_config, dt_global)

    def _set_optim(self, lr: float | None, lr_factor: float, opt_config: str, dt_global: bool) -> None:
        ssm = {"lr": lr / lr_factor} if lr is not None else {}
        frozen_decay = {**ssm, "weight_decay": 0.0}
        self.Lambda_re._optim = self.Lambda_im._optim = dict(frozen_decay)
        if not dt_global:
            self.log_step._optim = dict(frozen_decay)
        if opt_config in ("standard", "noBCdecay"):
            self.B._optim = dict(frozen_decay)
        elif opt_config == "BandCdecay" and ssm:
            self.B._optim = dict(ssm)
        if opt_config == "noBCdecay":
            for name in [*self.C_names, "D"]:
                getattr(self, name)._optim = dict(frozen_decay)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """log Lambda_bar (P',) complex and B_bar (P', H) complex."""
        re = self.Lambda_re.clamp(max=-1e-4) if self.clip_eigs else self.Lambda_re
        lam = torch.complex(re, self.Lambda_im)
        step = self.step_rescale * torch.exp(self.log_step)
        B = torch.view_as_complex(self.B)
        if self.discretization == "zoh":
            log_bar = lam * step
            return log_bar, ((torch.exp(log_bar) - 1) / lam)[:, None] * B
        half = step / 2 * lam
        return torch.log((1 + half) / (1 - half)), (step / (1 - half))[:, None] * B

    def c_tilde(self) -> list[torch.Tensor]:
        """Output matrices (H, P') per direction, complex."""
        if len(self.C_names) == 2:
            return [torch.view_as_complex(self.C1), torch.view_as_complex(self.C2)]
        C = torch.view_as_complex(self.C)
        return list(C.split(self.P, dim=-1)) if self.bidirectional else [C]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Bsz, L, H = u.shape
        log_bar, B_bar = self.discrete()
        # one GEMM gives the scan's planes directly: rows [Re B_bar; Im B_bar] -> (2, P', B, L)
        w_in = torch.cat([B_bar.real, B_bar.imag]).to(u.dtype)
        planes = (w_in @ u.reshape(-1, H).t()).view(2, self.P, Bsz, L)
        scale = 2.0 if self.conj_sym else 1.0
        y = u.reshape(-1, H) * self.D.to(u.dtype)
        for reverse, C in zip((False, True), self.c_tilde()):
            x = scan_planes(log_bar, planes, reverse, self.chunk).view(2 * self.P, Bsz * L)
            w_out = (scale * torch.cat([C.real, -C.imag], dim=1)).t().to(u.dtype)  # Re(C x) = Cr xr - Ci xi
            y = torch.addmm(y, x.t(), w_out)
        return y.view(Bsz, L, H)


# --- the layer and the stack ------------------------------------------------------------------------

class ChannelNorm(nn.Module):
    """BatchNorm over (batch, time) or LayerNorm over channels, for x: (B, L, H).

    ``bn_momentum`` is flax's (running = m old + (1 - m) batch; PyTorch's momentum is 1 - m); eps 1e-5 (batch,
    flax default) and 1e-6 (layer, flax default)."""

    def __init__(self, kind: str, d_model: int, bn_momentum: float = 0.9):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise ValueError(f"norm must be batch or layer, got {kind!r}")
        self.kind = kind
        self.norm = (nn.BatchNorm1d(d_model, eps=1e-5, momentum=1.0 - bn_momentum) if kind == "batch"
                     else nn.LayerNorm(d_model, eps=1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.reshape(-1, x.size(-1))).view_as(x) if self.kind == "batch" else self.norm(x)


class S5Layer(nn.Module):
    """x -> x + drop(act(S5SSM(norm(x)))) (prenorm) or norm(that) (postnorm). x: (B, L, H), keep: (B, L, 1)."""

    def __init__(self, ssm: S5SSM, d_model: int, activation: str = "half_glu1", dropout: float = 0.0,
                 prenorm: bool = True, norm: str = "batch", bn_momentum: float = 0.95):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation, self.prenorm = activation, prenorm
        self.seq = ssm
        self.norm = ChannelNorm(norm, d_model, bn_momentum)
        self.out1 = flax_dense(d_model, d_model) if activation == "full_glu" else None
        self.out2 = flax_dense(d_model, d_model) if activation != "gelu" else None
        self.drop = TiedDropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        z = self.norm(x) if self.prenorm else x
        z = self.seq(z * keep)  # pads zeroed after the norm: neither scan direction sees them
        g = self.drop(F.gelu(z, approximate="tanh"))  # flax nn.gelu: the tanh approximation
        if self.activation == "full_glu":
            z = self.drop(self.out1(g) * torch.sigmoid(self.out2(g)))
        elif self.activation == "half_glu1":
            z = self.drop(g * torch.sigmoid(self.out2(g)))
        elif self.activation == "half_glu2":  # GELU only on the gate's input
            z = self.drop(z * torch.sigmoid(self.out2(g)))
        else:
            z = g
        x = x + z
        return x if self.prenorm else self.norm(x)


class S5Encoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``: a stack of S5 layers, zeros at pads.

    ``d_state`` is S5's ``ssm_size_base`` P (P/2 stored with conj_sym), ``blocks`` its J, ``lr`` the global
    learning rate (``${optimizer.lr}``) and ``lr_factor`` S5's (SSM lr = lr / lr_factor); see the module
    docstring for ``opt_config`` and ``dt_global``.
    """

    def __init__(self, d_model: int, n_layers: int = 6, d_state: int = 256, blocks: int = 8, conj_sym: bool = True,
                 bidirectional: bool = True, C_init: str = "trunc_standard_normal", discretization: str = "zoh",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, clip_eigs: bool = False, activation: str = "half_glu1",
                 dropout: float = 0.0, prenorm: bool = True, norm: str = "batch", bn_momentum: float = 0.95,
                 lr: float | None = None, lr_factor: float = 1.0, opt_config: str = "standard", dt_global: bool = False,
                 chunk: int = CHUNK):
        super().__init__()
        self.layers = nn.ModuleList(
            S5Layer(S5SSM(d_model, d_state, blocks, conj_sym, bidirectional, C_init, discretization, dt_min, dt_max,
                          clip_eigs, lr=lr, lr_factor=lr_factor, opt_config=opt_config, dt_global=dt_global, chunk=chunk),
                    d_model, activation, dropout, prenorm, norm, bn_momentum)
            for _ in range(n_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[..., None].to(x.dtype)  # (B, L, 1)
        for layer in self.layers:
            x = layer(x * keep, keep)
        return x * keep
