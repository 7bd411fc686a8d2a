"""LRU, the Linear Recurrent Unit (Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences",
ICML 2023), written from the paper's equations and its Appendix A pseudo-code (there is no official code; the
block, inits and optimizer groups follow NicolasZucchet/minimal-LRU, the unofficial JAX implementation of the
paper, at bbd71b1 ``lru/model.py`` and ``lru/train_helpers.py``):

    lambda = exp(-exp(nu_log) + i exp(theta_log))                     (N,) complex, |lambda| < 1 always
    x_k = lambda * x_{k-1} + exp(gamma_log) * (B u_k)                  B: (N, H) complex, gamma: (N,)
    y_k = Re(C x_k) + D * u_k                                          C: (H, N) complex, D: (H,)

Initialisation (Lemma 3.2, "ring init"): |lambda| uniform on the ring r_min <= |lambda| <= r_max by area, i.e.
|lambda|^2 ~ U[r_min^2, r_max^2]: nu_log = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2)); phase
theta = max_phase * u2, theta_log = log(theta); gamma_log = log sqrt(1 - |lambda|^2) (trainable, as in the
pseudo-code); B_re, B_im ~ N(0, 1/(2H)), C_re, C_im ~ N(0, 1/N), D ~ N(0, 1) ("Glorot-like", B halved in
variance for the real part taken at the output).

Bidirectional (LRA): the paper's pseudo-code is one direction. Here, as S5's ``bidirectional``, a second scan
runs backwards in time over the same lambda and gamma * B u (it includes u_k, lag 0) with its own C_bwd:
y_k = Re(C x_fwd_k + C_bwd x_bwd_k) + D u_k. Conjugate pairs are not used: the LRU's states are not
constrained to come in pairs (phases in [0, max_phase]), so the real part is taken without a factor 2.

Block (Fig. 1 and Appendix D: Norm -> LRU -> GELU -> GLU -> skip): x + drop(GLU(drop(GELU(LRU(norm(x)))))),
GLU(z) = W1 z * sigmoid(W2 z) with W1, W2 two H x H maps (one Linear(H, 2H) here) and dropout placed as S5's ``full_glu``
(minimal-LRU ``lru/model.py`` lines 121-132, as lindermanlab/S5 ``s5/layers.py``), pre-norm BatchNorm, dropout
tied over the sequence; no final norm. GELU is flax's ``nn.gelu``, the tanh approximation (``model.py:126``);
W1, W2 are flax ``nn.Dense`` (``model.py:111-112``): lecun_normal weights (sd H^-1/2, truncated at 2 sd) and zero
bias, each half of the Linear(H, 2H) drawn so. BatchNorm is flax's default, momentum 0.99 (``model.py:116``:
running = 0.99 old + 0.01 batch; PyTorch momentum 0.01), eps 1e-5. Optimizer (``train_helpers.py`` lines 91-105):
nu_log, theta_log, gamma_log, B_re and B_im at ``recurrent_lr_scale`` x lr (``--lr_factor`` 0.5) with plain Adam,
i.e. without weight decay; the rest (C, D, GLU, norms, encoder, decoder) at lr with AdamW weight decay.

Cost: the (L, H) x (H, N) projections and the chunked scan of ``scan.py`` (O(L N T)); memory O(L N).
Padding: pads are zeroed after the norm, before the LRU, so neither direction carries them into real positions;
BatchNorm statistics include the zeroed pads (as this project's S4 and S5).
The classifier around the backbone (embedding, pooling, decoder) is the project's shared one, not minimal-LRU's
flax Dense encoder and decoder: the differences are listed in ``s5.py`` (the same classifier and the same flax
originals), kept so that only the backbone differs between models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.dropout import TiedDropout
from lra_bench.models.masks import length_mask
from lra_bench.models.ssm.s5 import ChannelNorm, flax_dense
from lra_bench.models.ssm.scan import CHUNK, scan_planes


def ring_init(n: int, r_min: float, r_max: float, max_phase: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nu_log, theta_log, gamma_log (N,) float64 (Lemma 3.2 and Appendix A)."""
    u1, u2 = torch.rand(2, n, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)  # |lambda| strictly inside (0, 1)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    theta_log = torch.log(max_phase * u2)
    modulus_sq = torch.exp(-2 * torch.exp(nu_log))  # |lambda|^2
    return nu_log, theta_log, torch.log(torch.sqrt(1 - modulus_sq))


class LRU(nn.Module):
    """u: (B, L, H) -> y: (B, L, H), pads of u zero (see the module docstring)."""

    def __init__(self, d_model: int, d_state: int, r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * math.pi,
                 bidirectional: bool = True, lr: float | None = None, recurrent_lr_scale: float = 0.5,
                 chunk: int = CHUNK):
        super().__init__()
        H, N = d_model, d_state
        self.N, self.bidirectional, self.chunk = N, bidirectional, chunk
        nu_log, theta_log, gamma_log = ring_init(N, r_min, r_max, max_phase)
        self.nu_log = nn.Parameter(nu_log.float())
        self.theta_log = nn.Parameter(theta_log.float())
        self.gamma_log = nn.Parameter(gamma_log.float())
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        if bidirectional:
            self.C_bwd_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
            self.C_bwd_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))
        recurrent = {"weight_decay": 0.0} | ({"lr": lr * recurrent_lr_scale} if lr is not None else {})
        for p in (self.nu_log, self.theta_log, self.gamma_log, self.B_re, self.B_im):  # minimal-LRU's "ssm" group
            p._optim = dict(recurrent)

    def log_lambda(self) -> torch.Tensor:
        """(N,) complex log lambda = -exp(nu_log) + i exp(theta_log)."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        Bsz, L, H = u.shape
        gamma = torch.exp(self.gamma_log)[:, None]
        # one GEMM gives the scan's planes: rows [gamma B_re; gamma B_im] -> (2, N, B, L)
        w_in = torch.cat([gamma * self.B_re, gamma * self.B_im]).to(u.dtype)
        planes = (w_in @ u.reshape(-1, H).t()).view(2, self.N, Bsz, L)
        log_lambda = self.log_lambda()
        y = u.reshape(-1, H) * self.D.to(u.dtype)
        outputs = [(False, self.C_re, self.C_im)] + ([(True, self.C_bwd_re, self.C_bwd_im)] if self.bidirectional else [])
        for reverse, C_re, C_im in outputs:
            x = scan_planes(log_lambda, planes, reverse, self.chunk).view(2 * self.N, Bsz * L)
            w_out = torch.cat([C_re, -C_im], dim=1).t().to(u.dtype)  # Re(C x) = C_re x_re - C_im x_im
            y = torch.addmm(y, x.t(), w_out)
        return y.view(Bsz, L, H)


class LRULayer(nn.Module):
    """x -> x + drop(GLU(drop(GELU(LRU(norm(x)))))) (prenorm) or norm(that) (postnorm). x: (B, L, H)."""

    def __init__(self, lru: LRU, d_model: int, dropout: float = 0.0, prenorm: bool = True, norm: str = "batch",
                 bn_momentum: float = 0.99):
        super().__init__()
        self.prenorm = prenorm
        self.seq = lru
        self.norm = ChannelNorm(norm, d_model, bn_momentum)
        self.glu = flax_dense(d_model, 2 * d_model)  # [W1; W2] in one GEMM; lecun fan-in H for both halves
        self.drop = TiedDropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        z = self.norm(x) if self.prenorm else x
        z = self.drop(F.gelu(self.seq(z * keep), approximate="tanh"))  # pads zeroed after the norm; flax nn.gelu
        a, b = self.glu(z).chunk(2, dim=-1)
        z = self.drop(a * torch.sigmoid(b))  # GLU(z) = W1 z * sigmoid(W2 z)
        x = x + z
        return x if self.prenorm else self.norm(x)


class LRUEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``: a stack of LRU blocks, zeros at pads.

    ``d_state`` is the LRU's N; ``lr`` the global learning rate (``${optimizer.lr}``), the recurrent parameters
    and B train at ``recurrent_lr_scale`` x lr without weight decay."""

    def __init__(self, d_model: int, n_layers: int = 6, d_state: int = 256, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 2 * math.pi, bidirectional: bool = True, dropout: float = 0.0, prenorm: bool = True,
                 norm: str = "batch", bn_momentum: float = 0.99, lr: float | None = None, recurrent_lr_scale: float = 0.5,
                 chunk: int = CHUNK):
        super().__init__()
        self.layers = nn.ModuleList(
            LRULayer(LRU(d_model, d_state, r_min, r_max, max_phase, bidirectional, lr, recurrent_lr_scale, chunk),
                     d_model, dropout, prenorm, norm, bn_momentum)
            for _ in range(n_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[..., None].to(x.dtype)  # (B, L, 1)
        for layer in self.layers:
            x = layer(x * keep, keep)
        return x * keep
