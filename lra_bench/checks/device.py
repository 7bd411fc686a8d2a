"""Device placement and host syncs: what breaks or stalls a model on its first GPU run, found on a CPU.

One training step of the classifier (forward and backward, train mode) runs under a ``TorchFunctionMode`` that
records
- every tensor factory call (``zeros``, ``ones``, ``arange``, ``full``, ``empty``, ``eye``, ``linspace``, ``rand*``,
  ``normal``, ``tensor``, ``asarray``, ``fft.fftfreq``, ...) made without ``device=`` and without a tensor to take
  the device from, or with the device hard-coded as the string ``"cpu"``: on a GPU that tensor lands on the CPU and
  the next op with a CUDA tensor raises (``Expected all tensors to be on the same device``). Any such call fails
  the row;
- every host sync (``.item()``, ``.cpu()``, ``.to("cpu")``, ``.tolist()``, ``.numpy()``, ``bool``/``int``/``float``
  of a tensor, and the ops whose output shape depends on the data: ``nonzero``, ``masked_select``, ``unique``,
  ``bincount``, ``repeat_interleave`` by a tensor, boolean-mask indexing and assignment): each one waits for the GPU
  to finish the queued work. They are counted and reported, not failed.
The autograd engine runs a custom ``autograd.Function``'s backward with torch function modes off, so those
backward passes (hand-written, where such calls hide) run inside the recorder explicitly.
Each finding names the function and the first frame outside torch (the model's own line), ``file:line``.
A tensor a module holds as a plain attribute (not a parameter or buffer) also fails the row: ``.to(device)`` skips it.
Not seen (they bypass ``__torch_function__``): ``torch.from_numpy``, the legacy ``torch.Tensor(...)`` /
``torch.FloatTensor(...)`` constructors and ``torch.range``; a ``torch.device("cpu")`` object is indistinguishable
from the input's device on a CPU.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode

from lra_bench.checks import FAIL, INFO, PASS, CheckResult

LENGTHS = (128, 97, 60, 9)
FACTORIES = frozenset({"zeros", "ones", "empty", "full", "arange", "eye", "linspace", "logspace", "rand",
                       "randn", "randint", "randperm", "normal", "tensor", "as_tensor", "asarray", "scalar_tensor",
                       "empty_strided", "tril_indices", "triu_indices", "bartlett_window", "hann_window",
                       "hamming_window", "blackman_window", "kaiser_window", "fft_fftfreq", "fft_rfftfreq"})
FACTORY_MODULES = ("torch", "torch._C._fft")  # torch.zeros, ...; torch.fft.fftfreq, torch.fft.rfftfreq
COPY_FROM_DATA = frozenset({"tensor", "as_tensor", "asarray", "normal"})  # a tensor argument gives them its device
SYNCS = frozenset({"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
                   "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"})
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
SHOWN = 6  # findings named in the detail line


def caller() -> str:
    """``file:line`` of the innermost frame outside torch and this module: the model's line that made the call."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"


def _is_bool_mask(index: object) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _has_tensor(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(a, torch.Tensor) for a in (*args, *kwargs.values()))


def _sync(name: str, args: tuple, kwargs: dict) -> str | None:
    """What a call waits for the device for, or None: a host copy, or an output whose shape depends on the data."""
    if name in SYNCS or (name == "where" and len(args) + len(kwargs) == 1):
        return name
    if name == "to" and any(isinstance(a, str) and a == "cpu" for a in (*args[1:2], kwargs.get("device"))):
        return "to('cpu')"  # the string only: on a CPU, x.device is torch.device("cpu") too
    if name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_bool_mask(args[1]):
        return f"boolean-mask {'indexing' if name == '__getitem__' else 'assignment'}"
    if name == "repeat_interleave" and kwargs.get("output_size") is None:
        repeats = kwargs.get("repeats", args[1] if len(args) > 1 else args[0] if args else None)
        return name if isinstance(repeats, torch.Tensor) and repeats.numel() > 1 else None
    return None


class DeviceRecorder(TorchFunctionMode):
    """Records factory calls without a device and host syncs, by ``"name at file:line"``; runs every call as is."""

    def __init__(self) -> None:
        super().__init__()
        self.factories: Counter[str] = Counter()
        self.syncs: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the torch protocol
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        is_torch_function = getattr(func, "__module__", None) in FACTORY_MODULES or "_VariableFunctions" in getattr(func, "__qualname__", "")
        if is_torch_function and name in FACTORIES and kwargs.get("out") is None:
            shown = "torch." + name.replace("fft_", "fft.")
            if kwargs.get("device") == "cpu":
                self.factories[f"{shown}(device='cpu') at {caller()}"] += 1
            elif kwargs.get("device") is None and not (name in COPY_FROM_DATA and _has_tensor(args, kwargs)):
                self.factories[f"{shown} at {caller()}"] += 1
        elif (sync := _sync(name, args, kwargs)) is not None:
            self.syncs[f"{sync} at {caller()}"] += 1
        return func(*args, **kwargs)


@contextmanager
def custom_backwards_recorded(recorder: DeviceRecorder) -> Iterator[None]:
    """Every custom ``autograd.Function``'s backward runs inside ``recorder`` (the engine calls it with torch
    function modes off: without this the row would see no backward code at all)."""
    originals = {name: getattr(BackwardCFunction, name) for name in ("apply", "apply_boxed")
                 if hasattr(BackwardCFunction, name)}

    def recorded(apply: Callable) -> Callable:
        def run(node, *args):  # noqa: ANN001, ANN202 - the engine's node
            if torch._C._is_torch_function_mode_enabled():  # already recorded (a backward called under the mode)
                return apply(node, *args)
            with recorder:
                return apply(node, *args)
        return run

    for name, apply in originals.items():
        setattr(BackwardCFunction, name, recorded(apply))
    try:
        yield
    finally:
        for name, apply in originals.items():
            setattr(BackwardCFunction, name, apply)


def _listed(found: Counter[str]) -> str:
    shown = [f"{what}" + (f" (x{n})" if n > 1 else "") for what, n in found.most_common(SHOWN)]
    return "; ".join(shown) + ("; ..." if len(found) > SHOWN else "")


def record_step(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], num_classes: int, pair: bool,
                seed: int = 0) -> DeviceRecorder:
    """One train-mode forward and backward of ``net`` under a ``DeviceRecorder``; the recorder."""
    torch.manual_seed(seed)
    lengths = torch.tensor(LENGTHS)
    args = [make_inputs(list(LENGTHS), max(LENGTHS), "zero"), lengths]
    if pair:
        args += [make_inputs(list(LENGTHS[::-1]), max(LENGTHS), "zero"), lengths.flip(0)]
    labels = torch.randint(0, num_classes, (len(LENGTHS),))
    net.train()
    net.zero_grad(set_to_none=True)
    recorder = DeviceRecorder()
    with custom_backwards_recorded(recorder), recorder:
        F.cross_entropy(net(*args).float(), labels).backward()
    net.zero_grad(set_to_none=True)
    return recorder


def unmoved_tensors(net: nn.Module) -> list[str]:
    """Tensors a module keeps as plain attributes (``self.scale = torch.ones(d)`` in ``__init__``), neither
    parameter nor buffer: ``model.to("cuda")``, which Lightning runs, leaves them on the CPU."""
    found = []
    for prefix, module in net.named_modules():
        for key, value in vars(module).items():  # parameters and buffers live in _parameters/_buffers (dicts)
            if any(isinstance(v, torch.Tensor) for v in (value if isinstance(value, (list, tuple)) else (value,))):
                found.append(f"{prefix}.{key}" if prefix else key)
    return found


def device_placement(net: nn.Module, make_inputs: Callable[[list[int], int, str], torch.Tensor], num_classes: int,
                     pair: bool) -> list[CheckResult]:
    unmoved = unmoved_tensors(net)  # before the step: a cache a forward fills from its parameters is on their device
    recorder = record_step(net, make_inputs, num_classes, pair)
    factories, syncs = recorder.factories, recorder.syncs
    n_factories, n_syncs = sum(factories.values()), sum(syncs.values())
    found = ([f"would land on the CPU: {_listed(factories)}"] if factories else []) + (
        [f"tensor attributes .to() does not move (register_buffer them): {', '.join(unmoved)}"] if unmoved else [])
    rows = [CheckResult("device: every tensor made on the input's device", FAIL if found else PASS,
                        f"{n_factories} call(s) without device=" + (f", {len(unmoved)} tensor attribute(s)" if unmoved else ""),
                        "; ".join(found) if found else
                        "forward and backward: every factory call has device= or a tensor to copy it from")]
    rows.append(CheckResult("device: host syncs (stall a GPU)", INFO if syncs else PASS, f"{n_syncs} sync(s)",
                            _listed(syncs) if syncs else "no .item(), .cpu(), .tolist(), bool(tensor) or data-dependent shape"))
    return rows
