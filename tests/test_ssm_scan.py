"""The chunked diagonal scan (S5, LRU) against the step-by-step recurrence: values, both directions, gradients."""

from __future__ import annotations

import pytest
import torch

from lra_bench.models.ssm.scan import linear_recurrence, scan_planes


def unrolled(log_lambda: torch.Tensor, b: torch.Tensor, reverse: bool) -> torch.Tensor:
    """x_t = lambda x_{t-1} + b_t (forward) or x_t = lambda x_{t+1} + b_t (reverse), one step at a time.
    b: (B, L, N) complex."""
    lam = torch.exp(log_lambda)
    steps = range(b.size(1) - 1, -1, -1) if reverse else range(b.size(1))
    x = torch.zeros_like(b[:, 0])
    out = [None] * b.size(1)
    for t in steps:
        x = lam * x + b[:, t]
        out[t] = x
    return torch.stack(out, 1)


def random_case(n: int, length: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """log lambda with |lambda| in (0.5, 1) and phases in (-pi, pi); b: (3, L, N) complex."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    log_lambda = torch.complex(-0.7 * torch.rand(n, generator=g, dtype=real), 3.14 * (2 * torch.rand(n, generator=g, dtype=real) - 1))
    b = torch.complex(torch.randn(3, length, n, generator=g, dtype=real), torch.randn(3, length, n, generator=g, dtype=real))
    return log_lambda, b


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# float64: the chunked scan is the recurrence up to rounding; float32: the brief's 1e-4 relative
@pytest.mark.parametrize("dtype,tol", [(torch.complex128, 1e-12), (torch.complex64, 1e-4)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 7, 16, 50, 333])
def test_scan_equals_the_unrolled_recurrence(dtype: torch.dtype, tol: float, reverse: bool, length: int) -> None:
    log_lambda, b = random_case(5, length, dtype)
    # chunk 4: lengths 50 and 333 recurse two and three levels (carries of carries)
    got = linear_recurrence(log_lambda, b, reverse=reverse, chunk=4)
    assert got.dtype == dtype and got.shape == b.shape
    assert rel_err(got, unrolled(log_lambda, b, reverse)) <= tol


@pytest.mark.parametrize("reverse", [False, True])
def test_default_chunk_on_a_long_sequence_in_float32(reverse: bool) -> None:
    log_lambda, b = random_case(4, 3000, torch.complex64, seed=1)
    log_lambda = torch.complex(log_lambda.real * 1e-3, log_lambda.imag)  # |lambda| ~ 1: long memory
    expected = unrolled(log_lambda.to(torch.complex128), b.to(torch.complex128), reverse)
    assert rel_err(linear_recurrence(log_lambda, b, reverse=reverse), expected) <= 1e-4


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_equal_autograd_through_the_unrolled_recurrence(reverse: bool) -> None:
    log_lambda, b = random_case(3, 37, torch.complex128, seed=2)
    weights = torch.randn(3, 37, 3, dtype=torch.complex128)
    grads = []
    for fn in (lambda l, x: linear_recurrence(l, x, reverse=reverse, chunk=4), lambda l, x: unrolled(l, x, reverse)):
        l, x = log_lambda.clone().requires_grad_(), b.clone().requires_grad_()
        (fn(l, x) * weights).real.sum().backward()  # a loss that weighs real and imaginary parts differently
        grads.append((l.grad, x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)


def test_planes_api_is_the_complex_one_on_real_and_imaginary_parts() -> None:
    log_lambda, b = random_case(6, 40, torch.complex128, seed=3)
    planes = torch.stack([b.real, b.imag]).permute(0, 3, 1, 2).contiguous()  # (2, N, B, L)
    x = scan_planes(log_lambda, planes)
    expected = linear_recurrence(log_lambda, b)
    torch.testing.assert_close(torch.complex(x[0], x[1]).permute(1, 2, 0), expected)


def test_fast_decay_and_pure_rotation_stay_finite_and_exact() -> None:
    """|lambda| ~ e^-40 (a state that forgets at once) and |lambda| = 1 (a pure rotation, no decay)."""
    log_lambda = torch.tensor([complex(-40.0, 1.0), complex(0.0, 0.3)], dtype=torch.complex128)
    b = torch.randn(2, 200, 2, dtype=torch.complex128)
    got = linear_recurrence(log_lambda, b, chunk=8)
    assert torch.isfinite(torch.view_as_real(got)).all()
    assert rel_err(got, unrolled(log_lambda, b, False)) <= 1e-12
    torch.testing.assert_close(got[..., 0], b[..., 0], rtol=1e-12, atol=1e-12)  # x_t = b_t when lambda ~ 0


def test_zero_inputs_after_the_end_leave_both_directions_unchanged() -> None:
    """Right padding with b = 0: the real steps of either direction do not change (what layers rely on)."""
    log_lambda, b = random_case(3, 30, torch.complex128, seed=4)
    padded = torch.cat([b, torch.zeros(3, 11, 3, dtype=b.dtype)], 1)
    for reverse in (False, True):
        torch.testing.assert_close(linear_recurrence(log_lambda, padded, reverse)[:, :30],
                                   linear_recurrence(log_lambda, b, reverse))


def test_planes_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\(2, N, M, L\)"):
        scan_planes(torch.zeros(3, dtype=torch.complex64), torch.zeros(2, 4, 1, 5))
