"""Mamba's selective scan (S6), exact and chunked in pure PyTorch; mamba_ssm's CUDA kernel when it is there.

For every channel e (E = expand * D of them) and state n (N = d_state), with input-dependent Delta, B and C:

    h_t = exp(Delta_t A) * h_{t-1} + Delta_t B_t u_t        (ZOH for A, Euler for B, as mamba_ssm)   h_{-1} = 0
    y_t = C_t . h_t + D u_t,     y_t <- y_t * SiLU(z_t)  when z is given

Reference: state-spaces/mamba ``mamba_ssm/ops/selective_scan_interface.py``: ``selective_scan_ref`` (the same
recurrence unrolled over L) and ``selective_scan_fn`` (the CUDA kernel), whose arguments this function takes
(``delta_bias`` added to Delta and ``delta_softplus`` applied before the scan). Differences: tensors are
time-major, u/Delta/z (B, L, E) and B/C (B, L, N), the layout the Mamba block produces (mamba_ssm takes
(B, E, L) and (B, N, L)); one B and C per step shared by all channels (mamba_ssm's "input-dependent" case,
no groups, real A only).

Computation without the kernel: L is cut into chunks of T steps (a Python loop over the L/T chunks that
carries the state h: (B, E, N)). Inside a chunk the recurrence is a Kogge-Stone parallel scan of the affine
maps h -> a_t h + b_t: log2(T) rounds of ``b_t += a_(t-k..t] b_(t-k)``, each round one fused multiply-add
over the chunk. It only ever multiplies decays <= 1, so it is exact for any Delta; the cumulative-sum
factorisation exp(S_t) * cumsum(exp(-S_s) b_s) with S = cumsum(Delta A) overflows as soon as one chunk
decays by more than e^-88 in float32 (a single step with Delta * |A| > 88 does it, a normal "reset" of a
trained Mamba), so it is not used.

Memory: the forward keeps its inputs and the state entering each chunk, (B, L/T, E, N); the backward
recomputes a chunk's states from it (as the CUDA kernel recomputes its states in the backward) and runs the
adjoint recurrence lambda_t = C_t dy_t + exp(Delta_{t+1} A) lambda_{t+1} backwards with the same scan. Extra
memory is O(B T E N) at any time: the (B, L, E, N) tensor of states is never formed. Cost O(B L E N log T).
Computed in float32 (float64 stays float64), returned in u's dtype, as the kernel does.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.cache
def cuda_selective_scan():
    """mamba_ssm's ``selective_scan_fn`` if mamba_ssm is importable, else None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def affine_scan(links: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Solve h_t = links_(t-1) h_(t-1) + b_t (or, reverse, h_t = links_t h_(t+1) + b_t) along dim 1 from h = 0.

    links: (M, T-1, ...), the factor between steps t and t+1; b: (M, T, ...). Kogge-Stone: after the round
    of span k, b_t holds the sum over the last 2k inputs and ``links`` the decay over 2k steps.
    """
    T = b.size(1)
    k = 1
    while k < T:
        nb = torch.empty_like(b)
        if reverse:
            nb[:, T - k:] = b[:, T - k:]
            torch.addcmul(b[:, : T - k], links[:, : T - k], b[:, k:], out=nb[:, : T - k])
        else:
            nb[:, :k] = b[:, :k]
            torch.addcmul(b[:, k:], links[:, : T - k], b[:, : T - k], out=nb[:, k:])
        if 2 * k < T:
            links = links[:, : T - 2 * k] * links[:, k: T - k]  # decay over 2k steps starting at each t
        b = nb
        k *= 2
    return b


class _ChunkedSelectiveScan(torch.autograd.Function):
    """y_t = C_t . h_t of the recurrence above (no D, no z), chunked; see the module docstring."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk: int) -> torch.Tensor:
        batch, L, E = u.shape
        h = u.new_zeros(batch, E, A.size(1))
        y = torch.empty_like(u)
        starts = range(0, L, chunk)
        h_in = u.new_empty(batch, len(starts), E, A.size(1))  # the state entering each chunk
        for c, t0 in enumerate(starts):
            t1 = min(t0 + chunk, L)
            a = torch.exp(delta[:, t0:t1, :, None] * A)  # (B, T, E, N)
            b = (delta[:, t0:t1] * u[:, t0:t1])[..., None] * B[:, t0:t1, None, :]
            b[:, 0].addcmul_(a[:, 0], h)  # the carried state enters through the first step
            h_in[:, c] = h
            hs = affine_scan(a[:, 1:], b)
            y[:, t0:t1] = (hs @ C[:, t0:t1, :, None]).squeeze(-1)
            h = hs[:, -1]
        ctx.save_for_backward(u, delta, A, B, C, h_in)
        ctx.chunk = chunk
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        u, delta, A, B, C, h_in = ctx.saved_tensors
        chunk = ctx.chunk
        L = u.size(1)
        du, ddelta, dB, dC = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        dy = dy.contiguous()
        carry = None  # exp(Delta A) lambda at the first step of the chunk after this one
        starts = list(range(0, L, chunk))
        for c in reversed(range(len(starts))):
            t0 = starts[c]
            t1 = min(t0 + chunk, L)
            d, du_in = delta[:, t0:t1], delta[:, t0:t1] * u[:, t0:t1]
            # recompute this chunk's states from the state entering it
            a = torch.exp(d[..., None] * A)
            b = du_in[..., None] * B[:, t0:t1, None, :]
            b[:, 0].addcmul_(a[:, 0], h_in[:, c])
            hs = affine_scan(a[:, 1:], b)
            # adjoint: lambda_t = C_t dy_t + a_(t+1) lambda_(t+1), entering from the next chunk
            g = dy[:, t0:t1, :, None] * C[:, t0:t1, None, :]
            if carry is not None:
                g[:, -1] += carry
            lam = affine_scan(a[:, 1:], g, reverse=True)
            carry = a[:, 0] * lam[:, 0]
            h_prev = torch.cat([h_in[:, c, None], hs[:, :-1]], 1)
            g_logdecay = lam * h_prev * a  # d loss / d(Delta_t A): through a_t = exp(Delta_t A)
            lam_B = (lam @ B[:, t0:t1, :, None]).squeeze(-1)  # (B, T, E): d loss / d(Delta_t u_t)
            dC[:, t0:t1] = (dy[:, t0:t1, None, :] @ hs).squeeze(2)
            dB[:, t0:t1] = (du_in[:, :, None, :] @ lam).squeeze(2)
            du[:, t0:t1] = lam_B * d
            ddelta[:, t0:t1] = (g_logdecay * A).sum(-1) + lam_B * u[:, t0:t1]
            dA += (g_logdecay * d[..., None]).sum((0, 1))
        return du, ddelta, dA, dB, dC, None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False, chunk: int = 32,
                   use_kernel: bool = True) -> torch.Tensor:
    """The selective scan of the module docstring.

    u, delta, z: (B, L, E); A: (E, N) (negative); B, C: (B, L, N); D, delta_bias: (E,). Returns (B, L, E).
    On CUDA with mamba_ssm installed (and ``use_kernel``) this is mamba_ssm's ``selective_scan_fn``;
    otherwise the chunked scan with ``chunk`` steps per chunk.
    """
    kernel = cuda_selective_scan() if use_kernel and u.is_cuda else None
    if kernel is not None:
        t = lambda x: None if x is None else x.transpose(1, 2)  # noqa: E731  (B, L, .) <-> (B, ., L)
        out = kernel(t(u), t(delta), A, t(B), t(C), D, z=t(z), delta_bias=delta_bias, delta_softplus=delta_softplus)
        return out.transpose(1, 2)
    dtype_in = u.dtype
    ct = torch.promote_types(dtype_in, torch.float32)
    u, delta, A, B, C = (x.to(ct) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)
    if delta_softplus:
        delta = F.softplus(delta)
    y = _ChunkedSelectiveScan.apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                                    C.contiguous(), chunk)
    if D is not None:
        y = y + u * D.to(ct)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(dtype_in)
