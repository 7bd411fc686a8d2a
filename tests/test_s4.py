"""S4 and S4D: kernels against recurrences, HiPPO by hand, spectra, causality, doubling, optimizer groups."""

from __future__ import annotations

import math

import pytest
import torch

from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.ssm.s4 import FFTConv, S4Encoder
from lra_bench.models.ssm.s4_kernels import SSMKernelDiag, SSMKernelDPLR, hippo_legs, nplr_legs, s4d_init
from lra_bench.training.optim import build_param_groups


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def s4d_state_space(kernel: SSMKernelDiag) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diagonal Abar (H, N/2), Bbar (H, N/2), C (channels, H, N/2) in complex128, as the recurrence uses them."""
    with torch.no_grad():
        dt = kernel.dt().double()[:, None]
        lam = kernel.lam().to(torch.complex128)
        B = torch.view_as_complex(kernel.B).to(torch.complex128).repeat_interleave(kernel.H // kernel.n_ssm, 0)
        if kernel.disc == "zoh":
            abar, bbar = torch.exp(dt * lam), (torch.exp(dt * lam) - 1) / lam * B
        else:
            abar, bbar = (1 + dt * lam / 2) / (1 - dt * lam / 2), dt * B / (1 - dt * lam / 2)
        return abar, bbar, torch.view_as_complex(kernel.C).to(torch.complex128)


def run_recurrence(abar, bbar, C, u: torch.Tensor, diagonal: bool) -> torch.Tensor:
    """y_k = C x_k with x_k = Abar x_{k-1} + Bbar u_k; u: (H, L) -> (H, L). Diagonal: 2 Re over the half."""
    x = torch.zeros_like(bbar)
    out = []
    for k in range(u.size(-1)):
        x = (abar * x if diagonal else torch.einsum("hnm,hm->hn", abar, x)) + bbar * u[:, k, None]
        y = (C * x).sum(-1)
        out.append(2 * y.real if diagonal else y.real)
    return torch.stack(out, -1)


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_convolution_equals_the_unrolled_recurrence(init: str, disc: str) -> None:
    torch.manual_seed(0)
    conv = FFTConv(3, d_state=8, mode="diag", bidirectional=False, init=init, disc=disc, n_ssm=1).double()
    u = torch.randn(1, 3, 40, dtype=torch.float64)
    abar, bbar, C = s4d_state_space(conv.kernel)
    expected = run_recurrence(abar, bbar, C[0], u[0], diagonal=True) + conv.D.detach()[:, None].double() * u[0]
    with torch.no_grad():
        assert rel_err(conv(u)[0], expected) <= 1e-4


def dplr_effective(kernel: SSMKernelDPLR, length: int):
    """Dense Abar, Bbar and the effective C = C~ (I - Abar^L)^-1 of the first channel (complex128)."""
    with torch.no_grad():
        kernel(length)  # sets up C~ for this length
        abar, bbar = (t.to(torch.complex128) for t in kernel.dense_abar())
        C = torch.view_as_complex(kernel.C).to(torch.complex128)[0]
        Cf = torch.cat([C, C.conj()], -1)
        eye = torch.eye(abar.size(-1), dtype=abar.dtype)
        power = torch.linalg.matrix_power(abar, int(kernel.l_kernel))
        c_eff = torch.linalg.solve((eye - power).transpose(-1, -2), Cf[..., None])[..., 0]
        return abar, bbar, c_eff


def test_dplr_kernel_equals_the_dense_krylov_kernel() -> None:
    torch.manual_seed(0)
    kernel = SSMKernelDPLR(2, d_state=8, channels=1, n_ssm=1).double()
    L = 64
    abar, bbar, c_eff = dplr_effective(kernel, L)
    x, krylov = bbar, []
    for _ in range(L):  # K_l = C Abar^l Bbar
        krylov.append((c_eff * x).sum(-1))
        x = torch.einsum("hnm,hm->hn", abar, x)
    krylov = torch.stack(krylov, -1)
    assert krylov.imag.abs().max() < 1e-8  # a real system in a complex basis
    with torch.no_grad():
        assert rel_err(kernel(L)[0].double(), krylov.real) <= 1e-4


def test_dplr_convolution_equals_the_unrolled_recurrence() -> None:
    torch.manual_seed(1)
    conv = FFTConv(2, d_state=6, mode="dplr", bidirectional=False, n_ssm=None).double()
    u = torch.randn(1, 2, 48, dtype=torch.float64)
    with torch.no_grad():
        y = conv(u)[0]
    abar, bbar, c_eff = dplr_effective(conv.kernel, 48)
    expected = run_recurrence(abar, bbar, c_eff, u[0], diagonal=False) + conv.D.detach()[:, None].double() * u[0]
    assert rel_err(y, expected) <= 1e-4


def test_doubling_the_length_keeps_the_first_taps() -> None:
    torch.manual_seed(2)
    kernel = SSMKernelDPLR(3, d_state=8, channels=2, n_ssm=1)
    with torch.no_grad():
        short = kernel(64).clone()
        assert int(kernel.l_kernel) == 64
        long = kernel(200)  # l_kernel doubles 64 -> 128 -> 256
        assert int(kernel.l_kernel) == 256
        assert long.shape[-1] == 200 and rel_err(long[..., :64], short) <= 1e-4
        assert rel_err(kernel(64), short) <= 1e-4  # shorter lengths read the first taps


def test_hippo_legs_by_hand() -> None:
    A, B, P = hippo_legs(3)
    r3, r5, r15 = math.sqrt(3), math.sqrt(5), math.sqrt(15)
    expected = torch.tensor([[-1.0, 0, 0], [-r3, -2, 0], [-r5, -r15, -3]], dtype=torch.float64)
    torch.testing.assert_close(A, expected)
    torch.testing.assert_close(B, torch.tensor([1.0, r3, r5], dtype=torch.float64))
    torch.testing.assert_close(P, torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64).sqrt())
    S = A + P[:, None] * P[None, :]  # -I/2 + skew-symmetric
    torch.testing.assert_close(S + S.T, -torch.eye(3, dtype=torch.float64))


def test_nplr_reconstructs_hippo_legs() -> None:
    n = 8
    lam, P, B, V = nplr_legs(n, b_clip=None)
    assert lam.shape == (n // 2,) and torch.allclose(lam.real, torch.full((n // 2,), -0.5, dtype=torch.float64))
    assert (lam.imag < 0).all()
    Vf = torch.cat([V, V.conj()], 1)
    lamf, Pf = torch.cat([lam, lam.conj()]), torch.cat([P, P.conj()])
    A = Vf @ (torch.diag(lamf) - Pf[:, None] * Pf.conj()[None, :]) @ Vf.conj().T
    A_ref, B_ref, _ = hippo_legs(n)
    # S4 forms A + P P^T in float32 before diagonalising in float64 (nplr_legs does the same), hence ~1e-6
    torch.testing.assert_close(A.real, A_ref, atol=1e-5, rtol=1e-6)
    assert A.imag.abs().max() < 1e-9
    torch.testing.assert_close((Vf @ torch.cat([B, B.conj()])).real, B_ref, atol=1e-5, rtol=1e-6)


def test_s4d_lin_and_inv_follow_the_official_sign_and_floor() -> None:
    """state-spaces/s4 dplr(): A = -1/2 - i imag with imag >= 0; the stored A_imag = imag floored at 1e-4."""
    lam, B = s4d_init("lin", 8)
    torch.testing.assert_close(lam, torch.tensor([-0.5 - 1j * math.pi * k for k in range(4)], dtype=torch.complex128))
    lam, _ = s4d_init("inv", 8)
    expected = [-0.5 - 1j * (8 / math.pi) * (8 / (2 * k + 1) - 1) for k in range(4)]
    torch.testing.assert_close(lam, torch.tensor(expected, dtype=torch.complex128))
    torch.testing.assert_close(B, torch.ones(4, dtype=torch.complex128))
    kernel = SSMKernelDiag(2, d_state=8, init="inv", n_ssm=1)
    torch.testing.assert_close(kernel.lam()[0].to(torch.complex128), torch.tensor(expected, dtype=torch.complex128), atol=1e-5, rtol=1e-5)
    lin = SSMKernelDiag(2, d_state=8, init="lin", n_ssm=1)
    torch.testing.assert_close(lin.A_imag[0], torch.tensor([1e-4, math.pi, 2 * math.pi, 3 * math.pi]))
    for init in ("lin", "inv", "legs"):
        assert (SSMKernelDiag(2, d_state=8, init=init, n_ssm=1).A_imag > 0).all(), init


# Computed once with the official state-spaces/s4 models/s4/s4.py nplr('legs', N) (B_clip=2.0) and its bilinear
# DPLR system; kernel taps 0, 1, 2, 3, 10, 50 for dt = 0.1 and C = 1 + 0.5i on every stored mode.
OFFICIAL_LEGS = {
    16: {"B": [-0.063101 - 2.0j, -0.067991 - 2.0j, -0.078371 - 2.0j, -0.096176 - 1.608466j, 0.126459 + 1.287361j],
         "kernel": [-0.149485, -0.252066, 0.052567, 0.224629, -0.13744, -0.000991]},
    64: {"B": [0.015630 + 2.0j, -0.015710 - 2.0j, 0.015862 + 2.0j, -0.016088 - 2.0j, 0.016394 + 2.0j],
         "kernel": [-0.13237, 0.260532, 0.420116, 0.40472, 0.052561, 0.011583]},
}


@pytest.mark.parametrize("n", [16, 64])
def test_dplr_init_b_and_kernel_match_the_official_values(n: int) -> None:
    """S4 clips Im B to +-2 for LegS (3 of 8 modes at N = 16, 11 of 32 at N = 64); unclipped, the kernel is ~0.7 off."""
    _, _, B, _ = nplr_legs(n)
    _, _, exact, _ = nplr_legs(n, b_clip=None)
    assert int((exact.imag.abs() > 2).sum()) == {16: 3, 64: 11}[n]
    torch.testing.assert_close(B[:5], torch.tensor(OFFICIAL_LEGS[n]["B"], dtype=torch.complex128), atol=1e-5, rtol=0)
    kernel = SSMKernelDPLR(1, d_state=n, channels=1, n_ssm=1).double()
    with torch.no_grad():
        torch.testing.assert_close(torch.view_as_complex(kernel.B)[0], B, atol=1e-6, rtol=0)  # the DPLR kernel uses it
        kernel.inv_dt.fill_(math.log(math.expm1(0.1)))  # dt = 0.1 under softplus
        kernel.C.copy_(torch.view_as_real(torch.full((1, 1, n // 2), 1 + 0.5j, dtype=torch.complex128)))
        abar, bbar = (t.to(torch.complex128) for t in kernel.dense_abar())
        Cf = torch.cat([torch.view_as_complex(kernel.C)[0], torch.view_as_complex(kernel.C)[0].conj()], -1)
        x, taps = bbar[0], []
        for _ in range(51):  # K_l = C Abar^l Bbar over both conjugate halves
            taps.append((Cf[0] * x).sum().real)
            x = abar[0] @ x
    ours = torch.stack(taps)[[0, 1, 2, 3, 10, 50]]
    torch.testing.assert_close(ours, torch.tensor(OFFICIAL_LEGS[n]["kernel"], dtype=torch.float64), atol=2e-6, rtol=0)
    with torch.no_grad():
        kernel_taps = kernel(64)[0, 0, [0, 1, 2, 3, 10, 50]]  # the generating-function kernel, C set up for L = 64
    assert rel_err(kernel_taps, torch.tensor(OFFICIAL_LEGS[n]["kernel"], dtype=torch.float64)) < 1e-4


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_causal_mode_leaks_nothing_from_the_future(mode: str) -> None:
    torch.manual_seed(3)
    conv = FFTConv(4, d_state=8, mode=mode, bidirectional=False, n_ssm=1)
    u = torch.randn(2, 4, 50)
    v = u.clone()
    v[..., 30:] = torch.randn(2, 4, 20)
    with torch.no_grad():
        torch.testing.assert_close(conv(u)[..., :30], conv(v)[..., :30])


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_bidirectional_sees_both_sides_and_its_backward_branch_skips_lag_0(mode: str) -> None:
    torch.manual_seed(4)
    conv = FFTConv(2, d_state=8, mode=mode, bidirectional=True, n_ssm=1)
    L, t0 = 32, 16
    u = torch.zeros(1, 2, L)
    u[..., t0] = 1.0
    with torch.no_grad():
        y = conv(u)[0]
        k = conv.kernel(L)  # (2, H, L): forward and backward kernels
    torch.testing.assert_close(y[:, t0], k[0, :, 0] + conv.D.detach())  # lag 0: forward tap 0 and D only
    torch.testing.assert_close(y[:, t0 - 1], k[1, :, 0])  # one step before: backward tap 0
    torch.testing.assert_close(y[:, t0 - 5], k[1, :, 4])
    torch.testing.assert_close(y[:, t0 + 3], k[0, :, 3])
    assert y[:, :t0].abs().sum() > 0 and y[:, t0 + 1 :].abs().sum() > 0


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_real_positions_do_not_change_when_padding_is_added(mode: str) -> None:
    torch.manual_seed(5)
    enc = S4Encoder(8, n_layers=2, d_state=4, mode=mode, n_ssm=1, norm="batch", prenorm=True).eval()
    x = torch.randn(1, 20, 8)
    alone = enc(x, torch.tensor([20]))
    padded = enc(torch.cat([x, torch.randn(1, 9, 8)], 1), torch.tensor([20]))
    torch.testing.assert_close(padded[:, :20], alone, atol=1e-5, rtol=1e-4)
    assert (padded[:, 20:] == 0).all()


def group_of(groups: list[dict], name: str) -> dict:
    return next(g for g in groups if name in g["names"])


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_optimizer_groups_dict_form(mode: str) -> None:
    """ListOps / Text / Retrieval: Delta at the global lr with wd 0; A, B, P at 1e-3, wd 0; C global lr and wd;
    backbone biases and norms wd 0; embedding and decoder keep weight decay."""
    enc = S4Encoder(8, n_layers=1, d_state=4, mode=mode, lr={"dt": None, "A": 1e-3, "B": 1e-3, "C": None})
    net = SequenceClassifier(enc, 8, 3, vocab_size=10)
    groups = build_param_groups(net, lr=0.01, weight_decay=0.05)
    k = "backbone.layers.0.conv.kernel."
    dt = group_of(groups, k + "inv_dt")
    assert (dt["lr"], dt["weight_decay"]) == (0.01, 0.0)
    for name in ("A_real", "A_imag", "B") + (("P",) if mode == "dplr" else ()):
        g = group_of(groups, k + name)
        assert (g["lr"], g["weight_decay"]) == (1e-3, 0.0), name
    for name in (k + "C", "embedding.weight", "head.net.1.weight", "backbone.layers.0.output_linear.weight"):
        g = group_of(groups, name)
        assert (g["lr"], g["weight_decay"]) == (0.01, 0.05), name
    for name in ("backbone.layers.0.output_linear.bias", "backbone.norms.0.norm.weight", "backbone.final_norm.norm.bias"):
        g = group_of(groups, name)
        assert (g["lr"], g["weight_decay"]) == (0.01, 0.0), name


def test_optimizer_groups_scalar_form() -> None:
    """Image / Pathfinder / Path-X: Delta, A, B, P at 1e-3 with wd 0; C at 1e-3 with the global wd (S4 v4 quirk)."""
    enc = S4Encoder(8, n_layers=1, d_state=4, mode="dplr", lr=1e-3)
    net = SequenceClassifier(enc, 8, 3, input="real")
    groups = build_param_groups(net, lr=0.004, weight_decay=0.05)
    k = "backbone.layers.0.conv.kernel."
    for name in ("inv_dt", "A_real", "A_imag", "B", "P"):
        g = group_of(groups, k + name)
        assert (g["lr"], g["weight_decay"]) == (1e-3, 0.0), name
    g = group_of(groups, k + "C")
    assert (g["lr"], g["weight_decay"]) == (1e-3, 0.05)
    assert (group_of(groups, "backbone.layers.0.conv.D")["lr"], group_of(groups, "backbone.layers.0.conv.D")["weight_decay"]) == (0.004, 0.05)


def test_decay_norm_bias_decays_the_backbones_biases_and_norms_as_d589d98() -> None:
    """d589d98's config.yaml sets no train.optimizer_param_grouping, so train.py:456 never calls
    add_optimizer_hooks: biases and norm weights keep the global weight decay; the SSM's Delta, A, B still get 0."""
    enc = S4Encoder(8, n_layers=1, d_state=4, mode="diag", lr={"dt": None, "A": 1e-3, "B": 1e-3, "C": None},
                    decay_norm_bias=True)
    groups = build_param_groups(SequenceClassifier(enc, 8, 3, vocab_size=10), lr=0.01, weight_decay=0.05)
    for name in ("backbone.layers.0.output_linear.bias", "backbone.norms.0.norm.weight", "backbone.final_norm.norm.bias"):
        g = group_of(groups, name)
        assert (g["lr"], g["weight_decay"]) == (0.01, 0.05), name
    g = group_of(groups, "backbone.layers.0.conv.kernel.inv_dt")
    assert (g["lr"], g["weight_decay"]) == (0.01, 0.0)


def test_s4d_legs_init_as_d589d98_unclipped_b_and_c_times_b() -> None:
    """d589d98 (the S4D paper's code): hippo.nplr has no B_clip, and SSKernel draws C ~ CN(0, 1) * B (kernel.py:975)."""
    lam, B = s4d_init("legs", 64, b_clip=None)
    _, _, B_nplr, _ = nplr_legs(64, b_clip=None)
    torch.testing.assert_close(B, B_nplr)
    assert B.imag.abs().max() > 2.0  # the clip at HEAD would have cut it
    assert s4d_init("legs", 64)[1].imag.abs().max() <= 2.0
    kernels = []
    for c_init in ("normal", "normal_times_b"):
        torch.manual_seed(0)  # same draws for Delta and C
        kernels.append(SSMKernelDiag(6, d_state=64, channels=2, init="legs", n_ssm=3, b_clip=None, c_init=c_init))
    plain, times_b = (torch.view_as_complex(k.C.detach()) for k in kernels)
    b = torch.view_as_complex(kernels[1].B.detach()).repeat_interleave(2, dim=0)  # n_ssm 3 over H 6
    torch.testing.assert_close(times_b, plain * b)
    with pytest.raises(ValueError, match="c_init"):
        SSMKernelDiag(4, d_state=4, c_init="ones")
    with pytest.raises(ValueError, match="S4D options"):
        FFTConv(4, d_state=4, mode="dplr", b_clip=None)
