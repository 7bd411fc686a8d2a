"""State-space convolution kernels for S4 (DPLR, HiPPO-LegS) and S4D (diagonal), in pure PyTorch.

Frame (Gu et al., ICLR 2022; state-spaces/s4 models/s4/s4.py): per channel x' = A x + B u, y = C x + D u, discretised with step Delta:
x_k = Abar x_{k-1} + Bbar u_k, so y = K * u + D u with K_l = C Abar^l Bbar. States are complex and come
in conjugate pairs: N/2 modes are stored and the kernel is 2 Re(...) (S4D) or summed over both halves (S4).

Memory: the naive kernels build (H, N/2, L) complex tensors (about 1 GB each at L = 16K). S4D here never
does (a two-table matmul, see ``SSMKernelDiag.forward``); S4 evaluates its Cauchy sums on chunks of
frequencies with a custom backward that rebuilds each chunk's Cauchy matrix (``CauchyMatmul``), so its
peak is one chunk, in the forward and in the backward.

Parameters (S4's names): ``inv_dt`` (Delta = softplus(inv_dt), or ``log_dt`` with exp), ``A_real`` and
``A_imag`` (lambda = -exp(A_real) - i A_imag), ``B``, ``P`` and ``C`` (complex, stored with view_as_real).
Each carries ``_optim`` settings for the optimizer groups (lra_bench/training/optim.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# --- HiPPO and initialisations (float64) ---------------------------------------------------------

def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1);
    rank-1 P_n = sqrt(n + 1/2), so that A + P P^T = -I/2 + S with S skew-symmetric."""
    q = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(n, dtype=torch.float64) + 1)
    B = q.clone()
    P = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    return A, B, P


def nplr_legs(n: int, b_clip: float | None = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of HiPPO-LegS: A = V (diag(Lambda) - P~ P~*) V*, diagonalised in float64.

    -i (A + P P^T) is Hermitian: ``eigh`` gives its real spectrum mu and unitary V, and Lambda = -1/2 + i mu.
    Eigenvalues come in conjugate pairs; the N/2 with negative imaginary part are kept, with
    P~ = V* P and B~ = V* B. Returns (Lambda, P~, B~, V) for the kept half.

    ``b_clip``: Im B~ is clipped to [-b_clip, b_clip], as S4 does for every LegS init, DPLR and diagonal
    (state-spaces/s4 ``models/s4/s4.py`` ``nplr(..., B_clip=2.0)``); it changes 3 of 8 modes at N = 16 and
    11 of 32 at N = 64. ``None`` keeps the exact V* B (then V B~ reconstructs HiPPO's B).
    """
    A, B, P = hippo_legs(n)
    # S is formed in float32 and only then diagonalised in float64, as S4 does: eigenvector phases (hence the
    # phases of B~ and P~) follow the input's rounding, and this keeps them equal to S4's, parameter for parameter
    S = (A.float() + P.float()[:, None] * P.float()[None, :]).double()
    mu, V = torch.linalg.eigh(S.to(torch.complex128) * -1j)
    lam = torch.diagonal(S).mean() + 1j * mu  # the diagonal of S is -1/2 everywhere
    keep = lam.imag < 0
    lam, V = lam[keep], V[:, keep]
    order = torch.argsort(lam.imag)  # a fixed order: most negative imaginary part first
    lam, V = lam[order], V[:, order]
    B = V.conj().T @ B.to(torch.complex128)
    if b_clip is not None:
        B = B.real + 1j * B.imag.clamp(-b_clip, b_clip)
    return lam, V.conj().T @ P.to(torch.complex128), B, V


def s4d_init(kind: str, n: int, b_clip: float | None = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda, B) of the N/2 stored modes for S4D: ``lin``, ``inv`` or ``legs``.

    As state-spaces/s4 ``models/s4/s4.py`` ``dplr()``: A = -1/2 - i * imag with imag >= 0, i.e. every kept
    eigenvalue has a negative imaginary part (S4D-Lin: Im lambda_k = -pi k; S4D-Inv: -(N/pi)(N/(2k+1) - 1)).
    B = 1 for Lin/Inv; LegS takes lambda and B from the NPLR form with Im B clipped to +-2 (S4's ``B_clip``;
    the theoretical 1/2 factor is dropped, as in S4); ``b_clip=None`` keeps B unclipped, as state-spaces/s4 did
    before the clip was added (d589d98 src/models/hippo/hippo.py ``nplr``, the S4D paper's code).
    """
    half = n // 2
    k = torch.arange(half, dtype=torch.float64)
    if kind == "lin":
        lam = -0.5 - 1j * math.pi * k
        B = torch.ones(half, dtype=torch.complex128)
    elif kind == "inv":
        lam = -0.5 - 1j * (n / math.pi) * (n / (2 * k + 1) - 1)
        B = torch.ones(half, dtype=torch.complex128)
    elif kind == "legs":
        lam, _, B, _ = nplr_legs(n, b_clip)
    else:
        raise ValueError(f"S4D init must be lin, inv or legs, got {kind!r}")
    return lam.to(torch.complex128), B


# --- shared parameter handling ---------------------------------------------------------------

def _complex(p: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(p)


def _register(module: nn.Module, name: str, value: torch.Tensor, optim: dict | None) -> None:
    """A trainable parameter with its optimizer settings (S4's ``register(name, tensor, lr, wd)``)."""
    p = nn.Parameter(value)
    if optim:
        p._optim = dict(optim)
    module.register_parameter(name, p)


class _SSMKernelBase(nn.Module):
    """Delta and lambda shared by both kernels; ``lr`` = {dt, A, B, C} (None: the global lr).

    Delta, A, B, P get weight decay 0; C keeps the global weight decay (with its own lr when set).
    """

    def __init__(self, d_model: int, lam: torch.Tensor, n_ssm: int | None, dt_min: float, dt_max: float,
                 dt_transform: str, lr: dict | None):
        super().__init__()
        if dt_transform not in ("softplus", "exp"):
            raise ValueError(f"dt_transform must be softplus or exp, got {dt_transform!r}")
        lr = lr or {}
        self.H = d_model
        self.n_ssm = n_ssm or d_model
        if d_model % self.n_ssm:
            raise ValueError(f"d_model={d_model} is not a multiple of n_ssm={self.n_ssm}")
        self.dt_transform = dt_transform
        # Delta log-uniform in [dt_min, dt_max], one per channel
        dt = torch.exp(torch.rand(d_model, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        raw = torch.log(torch.expm1(dt)) if dt_transform == "softplus" else torch.log(dt)
        self.optim = {k: ({"weight_decay": 0.0} | ({"lr": lr[k]} if lr.get(k) is not None else {})) for k in ("dt", "A", "B")}
        self.optim["C"] = {"lr": lr["C"]} if lr.get("C") is not None else None
        _register(self, "inv_dt", raw.float(), self.optim["dt"])
        lam = lam.expand(self.n_ssm, -1)
        _register(self, "A_real", torch.log(-lam.real).float().contiguous(), self.optim["A"])
        # S4 stores -Im lambda >= 0, floored at 1e-4 (its inv_transform clamps), so mode 0 of S4D-Lin is not 0
        _register(self, "A_imag", (-lam.imag).clamp(min=1e-4).float().contiguous(), self.optim["A"])

    def dt(self) -> torch.Tensor:
        return F.softplus(self.inv_dt) if self.dt_transform == "softplus" else torch.exp(self.inv_dt)

    def lam(self) -> torch.Tensor:
        """(H, N/2) complex eigenvalues, repeated over the channels that share an SSM (n_ssm)."""
        lam = -torch.exp(self.A_real) - 1j * self.A_imag
        return lam.repeat_interleave(self.H // self.n_ssm, dim=0)

    def _shared(self, p: torch.Tensor) -> torch.Tensor:
        return p.repeat_interleave(self.H // self.n_ssm, dim=0)


# --- S4D ---------------------------------------------------------------------------------------

C_INITS = ("normal", "normal_times_b")  # C ~ CN(0, 1) (HEAD) | CN(0, 1) * B (d589d98)

class SSMKernelDiag(_SSMKernelBase):
    """S4D: K_l = 2 Re sum_n C_n Bbar_n exp(l log Abar_n), ZOH (default) or bilinear discretisation.

    ``c_init``: ``normal`` draws C ~ CN(0, 1) (state-spaces/s4 at HEAD); ``normal_times_b`` draws C ~ CN(0, 1) * B,
    as the S4D paper's code did (d589d98 src/models/sequence/ss/kernel.py:975, ``C = C * repeat(B, ...)`` before
    the kernel multiplies by B again), so the initial kernel carries B^2.
    """

    def __init__(self, d_model: int, d_state: int = 64, channels: int = 1, init: str = "legs", disc: str = "zoh",
                 n_ssm: int | None = None, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_transform: str = "softplus",
                 lr: dict | None = None, b_clip: float | None = 2.0, c_init: str = "normal"):
        lam, B = s4d_init(init, d_state, b_clip)
        super().__init__(d_model, lam, n_ssm, dt_min, dt_max, dt_transform, lr)
        if disc not in ("zoh", "bilinear"):
            raise ValueError(f"disc must be zoh or bilinear, got {disc!r}")
        if c_init not in C_INITS:
            raise ValueError(f"c_init must be one of {C_INITS}, got {c_init!r}")
        self.disc, self.channels = disc, channels
        B = B.expand(self.n_ssm, -1).to(torch.complex64).contiguous()
        _register(self, "B", torch.view_as_real(B), self.optim["B"])
        C = torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64)
        if c_init == "normal_times_b":
            C = C * B.repeat_interleave(d_model // self.n_ssm, dim=0)
        _register(self, "C", torch.view_as_real(C), self.optim["C"])

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log Abar, C Bbar), each (channels?, H, N/2) complex."""
        dt = self.dt()[:, None]
        dtA = dt * self.lam()
        B = self._shared(_complex(self.B))
        if self.disc == "zoh":
            log_abar = dtA
            bbar = (torch.exp(dtA) - 1) / self.lam() * B
        else:
            log_abar = torch.log((1 + dtA / 2) / (1 - dtA / 2))
            bbar = dt * B / (1 - dtA / 2)
        return log_abar, _complex(self.C) * bbar

    def forward(self, length: int) -> torch.Tensor:
        """(channels, H, L) real kernel.

        Abar^l for l = q R + r is (Abar^R)^q Abar^r, so the Vandermonde sum is a batched complex matmul of
        two small tables, (H, Q, N/2) @ (H, N/2, R) with Q R >= L: no (H, N/2, L) tensor and no
        transcendental per tap."""
        log_abar, cb = self.discrete()
        R = 1 << max(0, math.ceil(math.log2(max(length, 1)) / 2))
        Q = -(-length // R)
        r = torch.arange(R, device=log_abar.device, dtype=torch.float32)
        q = torch.arange(Q, device=log_abar.device, dtype=torch.float32) * R
        fine = torch.exp(log_abar[..., None] * r)  # (H, N/2, R)
        coarse = torch.exp(log_abar[..., None] * q)  # (H, N/2, Q)
        left = (cb[..., None] * coarse).transpose(-1, -2)  # (channels, H, Q, N/2)
        k = 2 * torch.matmul(left, fine).real  # (channels, H, Q, R)
        return k.reshape(*k.shape[:-2], Q * R)[..., :length]


# --- S4 (DPLR) ---------------------------------------------------------------------------------

class SSMKernelDPLR(_SSMKernelBase):
    """S4: A = Lambda - P P* (HiPPO-LegS, NPLR), bilinear discretisation, kernel from its truncated
    generating function at the roots of unity (Cauchy sums + Woodbury), then an inverse FFT.

    The trained ``C`` is C~ = C (I - Abar^L) for the length ``l_kernel`` it was set up for: it is converted
    from the random C at the first forward, and when a longer L is needed the length doubles with
    C~ <- C~ (I + Abar^L), since I - Abar^{2L} = (I - Abar^L)(I + Abar^L). Kernels for shorter L are the
    first taps of the ``l_kernel`` one.
    """

    def __init__(self, d_model: int, d_state: int = 64, channels: int = 1, n_ssm: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_transform: str = "softplus", lr: dict | None = None,
                 chunk: int = 256):
        lam, P, B, _ = nplr_legs(d_state)
        super().__init__(d_model, lam, n_ssm, dt_min, dt_max, dt_transform, lr)
        self.chunk, self.channels, self.half = chunk, channels, d_state // 2
        _register(self, "B", torch.view_as_real(B.expand(self.n_ssm, -1).to(torch.complex64).contiguous()), self.optim["B"])
        _register(self, "P", torch.view_as_real(P.expand(self.n_ssm, -1).to(torch.complex64).contiguous()), self.optim["A"])
        C = torch.randn(channels, d_model, self.half, dtype=torch.complex64)
        _register(self, "C", torch.view_as_real(C), self.optim["C"])
        self.register_buffer("l_kernel", torch.tensor(0))

    def _full(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Lambda, B, P over both conjugate halves: (H, N)."""
        lam, B, P = self.lam(), self._shared(_complex(self.B)), self._shared(_complex(self.P))
        return torch.cat([lam, lam.conj()], -1), torch.cat([B, B.conj()], -1), torch.cat([P, P.conj()], -1)

    def dense_abar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense (H, N, N) Abar = (I - dt/2 A)^-1 (I + dt/2 A) and (H, N) Bbar = (I - dt/2 A)^-1 dt B."""
        lam, B, P = self._full()
        A = torch.diag_embed(lam) - P[..., :, None] * P.conj()[..., None, :]
        dt = self.dt()[:, None, None].to(A.dtype)
        eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
        left = eye - dt / 2 * A
        abar = torch.linalg.solve(left, eye + dt / 2 * A)
        bbar = torch.linalg.solve(left, dt[..., 0] * B)
        return abar, bbar

    @torch.no_grad()
    def _setup_c(self, length: int) -> None:
        """Convert C to C~ for ``length`` (first call) or double l_kernel until it covers ``length``."""
        abar = self.dense_abar()[0].to(torch.complex128)
        C = _complex(self.C).to(torch.complex128)
        Cf = torch.cat([C, C.conj()], -1)  # (channels, H, N)
        if int(self.l_kernel) == 0:
            power = torch.linalg.matrix_power(abar, length)
            Cf = Cf - torch.einsum("chn,hnm->chm", Cf, power)
            self.l_kernel.fill_(length)
        while int(self.l_kernel) < length:
            power = torch.linalg.matrix_power(abar, int(self.l_kernel))
            Cf = Cf + torch.einsum("chn,hnm->chm", Cf, power)
            self.l_kernel.mul_(2)
        self.C.copy_(torch.view_as_real(Cf[..., : self.half].to(torch.complex64)))

    def forward(self, length: int) -> torch.Tensor:
        """(channels, H, L) real kernel: the first L taps of the l_kernel-length one."""
        if int(self.l_kernel) < length:
            self._setup_c(length)
        L = int(self.l_kernel)
        lam, B, P = self._full()
        C = _complex(self.C)
        Cf = torch.cat([C, C.conj()], -1)
        dt = self.dt()[:, None]
        dlam = dt * lam  # (H, N)
        # numerators of the Cauchy sums r(a, b) = sum_n a_n b_n / (g - dt lambda_n), stacked for one matmul:
        # [C~ dt B (per channel), C~ dt P (per channel), Q* dt B, Q* dt P] with Q = P
        ch = Cf.size(0)
        rows = torch.cat([Cf * (dt * B), Cf * (dt * P), (P.conj() * (dt * B))[None], (P.conj() * (dt * P))[None]])
        rows = rows.transpose(0, 1)  # (H, 2 ch + 2, N)
        k = torch.arange(L // 2 + 1, device=lam.device, dtype=torch.float64)
        omega = torch.exp(-2j * math.pi * k / L).to(lam.dtype)
        pieces = [_dplr_frequency_response(omega[s : s + self.chunk], dlam, rows, ch) for s in range(0, len(omega), self.chunk)]
        khat = torch.cat(pieces, dim=-1)
        return torch.fft.irfft(khat, n=L)[..., :length]


class CauchyMatmul(torch.autograd.Function):
    """t[h, k, f] = sum_n rows[h, k, n] / ((1 - omega_f) - c_f dlam[h, n]), c = (1 + omega) / 2.

    Saves only its inputs (the (H, N, f) Cauchy matrix is rebuilt in the backward), and the backward is
    two matmuls and a few elementwise passes instead of autograd through reciprocal, sub and mul. Gradients
    follow PyTorch's convention for complex tensors (grad = dL/d conj(z)):
    d rows = g @ Cauchy^H;  d dlam[h, n] = sum_k conj(rows[h, k, n]) (g @ (c Cauchy^2)^H)[h, k, n].
    """

    @staticmethod
    def forward(ctx, omega: torch.Tensor, dlam: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(omega, dlam, rows)
        return torch.matmul(rows, _cauchy(omega, dlam))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        omega, dlam, rows = ctx.saved_tensors
        cauchy = _cauchy(omega, dlam)  # (H, N, f)
        grad_rows = torch.matmul(grad, cauchy.conj().transpose(-1, -2)) if ctx.needs_input_grad[2] else None
        grad_dlam = None
        if ctx.needs_input_grad[1]:
            c = (1 + omega) / 2
            weighted = cauchy.square_().mul_(c)  # c Cauchy^2, in place: Cauchy is not needed any more
            grad_dlam = (rows.conj() * torch.matmul(grad, weighted.conj().transpose(-1, -2))).sum(dim=1)
        return None, grad_dlam, grad_rows


def _cauchy(omega: torch.Tensor, dlam: torch.Tensor) -> torch.Tensor:
    c = (1 + omega) / 2
    return torch.reciprocal((1 - omega) - dlam[..., None] * c)


def _dplr_frequency_response(omega: torch.Tensor, dlam: torch.Tensor, rows: torch.Tensor, ch: int) -> torch.Tensor:
    """K^(omega) = 2/(1+omega) [r00 - r01 r10 / (1 + r11)] with r over g = 2(1-omega)/(1+omega).

    Written with c = (1+omega)/2 and t = r / c, which stays finite at omega = -1:
    K^ = t00 - c t01 t10 / (1 + c t11), t(v) = sum_n v_n / ((1 - omega) - c dt lambda_n).
    rows: (H, 2 ch + 2, N) numerators [C~ dt B, C~ dt P, P* dt B, P* dt P] -> (ch, H, f)."""
    c = (1 + omega) / 2
    t = CauchyMatmul.apply(omega, dlam, rows).transpose(0, 1)  # (2 ch + 2, H, f)
    t00, t01, t10, t11 = t[:ch], t[ch : 2 * ch], t[2 * ch], t[2 * ch + 1]
    return t00 - c * t01 * t10 / (1 + c * t11)
