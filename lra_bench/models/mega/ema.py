"""Mega's multi-dimensional damped EMA (``MultiHeadEMA``), bidirectional or causal.

Parameters (official names; the paper's symbols in brackets; shapes for C kernel channels, C = 2D
bidirectional or D causal, N EMA dims):

    delta (C, N, 1)  [alpha]  input weight   p = sigmoid(delta)          init N(0, 0.2)
    alpha (C, N, 1)  [delta]  damping        a = sigmoid(alpha)          init N(0, 0.2)
    beta  (C, N, 1)  [beta]   expansion                                 init N(0, 0.02) + (1, -1, 1, -1, ...)
    gamma (C, N)     [eta]    projection                                init N(0, 1)
    omega (D)        [-]      residual weight (code only)               init N(0, 1)

Kernel (decay q = 1 - p * a; facebookresearch/mega#4), for t < K = min(truncation, L):

    K[c, t] = sum_n gamma[c, n] * sqrt(1/N) * p[c, n] * beta[c, n] * q[c, n]^t             (eq. 2-3)

Bidirectional: rows 0..D-1 run forward, rows D..2D-1 backward, both including lag 0:

    y_t = sum_j k1[j] x_{t-j} + sum_j k2[j] x_{t+j};      output = silu(y + omega * x)

The code, not the paper (eq. 6 says only EMA(X)), adds the omega residual and the SiLU. Pads are
zeroed before the convolution, so they feed neither direction. The convolution is linear, by FFT
in float32 (half-precision FFTs need power-of-two sizes), on one two-sided kernel of 2K - 1 taps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such sizes are fast in every backend."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


class MultiHeadEMA(nn.Module):
    """``forward(x: (B, L, D), mask: (B, L) bool or None) -> (B, L, D)``; mask True at real positions."""

    def __init__(self, d_model: int, n_dim: int = 16, bidirectional: bool = True, truncation: int | None = None):
        super().__init__()
        self.d_model = d_model
        self.n_dim = n_dim
        self.bidirectional = bidirectional
        self.truncation = truncation
        self.scale = math.sqrt(1.0 / n_dim)
        channels = 2 * d_model if bidirectional else d_model
        self.delta = nn.Parameter(torch.empty(channels, n_dim, 1))
        self.alpha = nn.Parameter(torch.empty(channels, n_dim, 1))
        self.beta = nn.Parameter(torch.empty(channels, n_dim, 1))
        self.gamma = nn.Parameter(torch.empty(channels, n_dim))
        self.omega = nn.Parameter(torch.empty(d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.delta, mean=0.0, std=0.2)
            nn.init.normal_(self.alpha, mean=0.0, std=0.2)
            signs = torch.ones(self.n_dim, 1)
            signs[1::2] = -1.0  # beta starts at (1, -1, 1, -1, ...) along n
            self.beta.normal_(mean=0.0, std=0.02).add_(signs)
            nn.init.normal_(self.gamma, mean=0.0, std=1.0)
            nn.init.normal_(self.omega, mean=0.0, std=1.0)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """p = sigmoid(delta) (input weight) and q = 1 - p * sigmoid(alpha) (decay), each (C, N, 1)."""
        p = torch.sigmoid(self.delta)
        q = 1.0 - p * torch.sigmoid(self.alpha)
        return p, q

    def kernel(self, length: int) -> torch.Tensor:
        """The (C, K) kernel for K = min(truncation, length) taps.

        q^t for t = a R + b is (q^R)^a q^b, so the sum over N is a batched matmul of two small tables,
        (C, A, N) @ (C, N, R) with A R >= K: no (C, N, K) tensor is built or kept for the backward
        (4M floats per layer at D = 128, K = 1024). Powers below e^-60 are set to zero: fp32 sums cannot see
        them next to the O(0.1) leading taps, and computing them as denormals makes exp ~7x slower on CPUs.
        """
        k = length if self.truncation is None else min(self.truncation, length)
        p, q = self.coefficients()
        log_q = torch.log(q).squeeze(-1)  # (C, N)
        weight = (p * self.beta).squeeze(-1) * self.gamma * self.scale  # (C, N)
        R = 1 << max(0, math.ceil(math.log2(max(k, 1)) / 2))
        A = -(-k // R)
        fine = torch.exp(log_q[..., None] * torch.arange(R, device=q.device, dtype=q.dtype))  # (C, N, R)
        coarse_exp = log_q[..., None] * (torch.arange(A, device=q.device, dtype=q.dtype) * R)  # (C, N, A)
        coarse = torch.exp(coarse_exp.clamp(min=-60.0)).masked_fill(coarse_exp < -60.0, 0.0)
        taps = torch.bmm((weight[..., None] * coarse).transpose(1, 2), fine)  # (C, A, R)
        return taps.reshape(taps.size(0), A * R)[:, :k]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        residual = x
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)  # pads feed neither direction
        kernel = self.kernel(L).float()
        K = kernel.size(1)
        u = x.transpose(1, 2).float()  # (B, D, L), fp32 FFT
        if self.bidirectional:
            k1, k2 = kernel.split(D, dim=0)
            # one two-sided kernel, taps -(K-1)..(K-1) stored at 0..2K-2: h[K-1+m] = k1[m] (m>=0) + k2[-m] (m<=0)
            h = F.pad(k2.flip(-1), (0, K - 1)) + F.pad(k1, (K - 1, 0))
            n = fast_fft_size(L + K - 1)  # circular wrap lands only on outputs we drop (see module docstring)
            y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(h, n=n), n=n)[..., K - 1 : K - 1 + L]
        else:
            n = fast_fft_size(L + K - 1)
            y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(kernel, n=n), n=n)[..., :L]
        return F.silu(torch.addcmul(y.transpose(1, 2).to(x.dtype), residual, self.omega))  # silu(EMA(x) + omega * x)
