"""The device row's recorder (lra_bench/checks/device.py): each tensor factory that lands on the CPU on a GPU node is
named, including those outside the common ``torch.zeros`` family, a hard-coded ``device="cpu"``, a factory in a
custom autograd backward and a tensor kept as a plain attribute; the forms that take the input's device are not; and
each host sync is counted. Direct
calls, no Hydra: a few seconds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lra_bench.checks import FAIL, PASS
from lra_bench.checks.device import DeviceRecorder, device_placement

X = torch.randn(2, 5, 4)


def recorded(call: Callable[[], object]) -> DeviceRecorder:
    recorder = DeviceRecorder()
    with recorder:
        call()
    return recorder


def named(found) -> list[str]:  # noqa: ANN001 - a Counter of "what at file:line"
    return [key.split(" at ")[0] for key in found]


@pytest.mark.parametrize("what, call", [
    ("torch.ones", lambda: torch.ones(X.size(-1))),
    ("torch.normal", lambda: torch.normal(0.0, 1e-3, size=(4,))),
    ("torch.asarray", lambda: torch.asarray([1, 2])),
    ("torch.fft.fftfreq", lambda: torch.fft.fftfreq(8)),
    ("torch.fft.rfftfreq", lambda: torch.fft.rfftfreq(8)),
    ("torch.ones(device='cpu')", lambda: torch.ones(4, device="cpu")),
])
def test_a_factory_that_would_land_on_the_cpu_is_named(what: str, call: Callable[[], object]) -> None:
    assert named(recorded(call).factories) == [what]


def test_factories_that_take_the_input_device_are_not_findings() -> None:
    recorder = recorded(lambda: (X.new_zeros(3), torch.zeros_like(X), torch.ones(3, device=X.device),
                                 torch.normal(X, 1.0), torch.asarray(X), torch.as_tensor(X),
                                 torch.fft.fftfreq(8, device=X.device)))
    assert not recorder.factories and not recorder.syncs


@pytest.mark.parametrize("what, call", [
    ("item", lambda: X.sum().item()),
    ("to('cpu')", lambda: X.to("cpu")),
    ("boolean-mask indexing", lambda: X[X > 0]),
    ("boolean-mask assignment", lambda: X.clone().__setitem__(X > 0, 0.0)),
    ("bincount", lambda: torch.bincount(torch.tensor([0, 2, 2], device=X.device))),
    ("repeat_interleave", lambda: X.repeat_interleave(torch.tensor([1, 2], device=X.device), dim=0)),
])
def test_a_host_sync_is_counted(what: str, call: Callable[[], object]) -> None:
    assert named(recorded(call).syncs) == [what]


def test_moves_and_shapes_that_need_no_sync_are_not_counted() -> None:
    recorder = recorded(lambda: (X.to(X.device), X.to(torch.float64), X.repeat_interleave(2, dim=0),
                                 X[X.sum(-1) > 0, :1]))
    assert named(recorder.syncs) == ["boolean-mask indexing"]


class _DoubleWithCpuGradient(torch.autograd.Function):
    """Doubles its input; its backward makes its factor without ``device=`` (a CPU tensor on a GPU node)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return 2 * x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad * torch.full((grad.size(-1),), 2.0)  # the backward finding


class CpuTensorInBackward(nn.Module):
    """A classifier whose only device fault is in a custom backward: forward alone is clean."""

    def __init__(self, d: int = 4, classes: int = 2):
        super().__init__()
        self.proj, self.head = nn.Linear(d, d), nn.Linear(d, classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(_DoubleWithCpuGradient.apply(self.proj(x)).mean(1))


def test_a_factory_in_a_custom_backward_fails_the_row_naming_its_line() -> None:
    """The autograd engine runs a custom backward with torch function modes off: unless the row re-enters its
    recorder there, the hand-written backward passes go unchecked."""
    make = lambda lengths, width, pad: torch.randn(len(lengths), width, 4)  # noqa: E731
    row, syncs = device_placement(CpuTensorInBackward(), make, 2, pair=False)
    line = next(i for i, text in enumerate(open(__file__), 1) if "# the backward finding" in text)
    assert (row.status, row.figure) == (FAIL, "1 call(s) without device=")
    assert row.detail == f"would land on the CPU: torch.full at tests/test_check_device.py:{line}"
    assert syncs.status == PASS


class PlainTensorAttribute(nn.Module):
    """Keeps its scale as a plain attribute: ``.to("cuda")`` moves the Linear layers and leaves the scale behind."""

    def __init__(self, d: int = 4, classes: int = 2, buffer: bool = False):
        super().__init__()
        self.proj, self.head = nn.Linear(d, d), nn.Linear(d, classes)
        if buffer:
            self.register_buffer("scale", torch.ones(d))
        else:
            self.scale = torch.ones(d)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head((self.proj(x) * self.scale).mean(1))


def test_a_tensor_kept_as_a_plain_attribute_fails_the_row_and_a_buffer_passes() -> None:
    make = lambda lengths, width, pad: torch.randn(len(lengths), width, 4)  # noqa: E731
    row, _ = device_placement(PlainTensorAttribute(), make, 2, pair=False)
    assert (row.status, row.figure) == (FAIL, "0 call(s) without device=, 1 tensor attribute(s)")
    assert row.detail == "tensor attributes .to() does not move (register_buffer them): scale"
    row, _ = device_placement(PlainTensorAttribute(buffer=True), make, 2, pair=False)
    assert row.status == PASS
