"""Building the model under check: its config for a task (preset or its own sizes), the classifier, inputs, and the
perturbation that makes a fresh model look trained.

Which config: ``experiment=lra/<model>-<task>`` when that preset is on the search path, else ``task=<task>
model=<model>`` (the model config's own sizes). Quick mode always takes the latter, with one layer where the
backbone has ``n_layers``. The correctness checks run at short lengths (``CHECK_LENGTH``), so the length-sized parts
of a config (``task.max_length``, a backbone's ``max_length`` / ``max_positions``) are set to that length: nothing
of size L x L is built at a preset's 16K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lra_bench.benchmarks.model_configs import compose_train, length_overrides

CHECK_LENGTH = 128  # the longest sequence of the correctness checks (before a CLS token): a few blocks of a blocked model
TASK_OF_INPUT = {("tokens", False): "listops", ("real", False): "image", ("tokens", True): "retrieval"}


@dataclass(frozen=True)
class Target:
    """What is checked: a model name, the task whose config builds it, quick mode, and the user's extra Hydra
    overrides (applied to the model's configs, never to the reference presets) and search path."""

    model: str
    task: str = "listops"
    quick: bool = False
    overrides: tuple[str, ...] = ()
    searchpath: tuple[str, ...] = field(default_factory=tuple)


def compose(overrides: Sequence[str], searchpath: Sequence[str] = ()) -> DictConfig:
    """The training config for ``overrides``, without loggers (``task.vocab_size`` a placeholder where null)."""
    return compose_train(["logger=none", *overrides], searchpath)


def has_preset(model: str, task: str, searchpath: Sequence[str] = ()) -> bool:
    from lra_bench.config import available

    return f"lra/{model}-{task}" in available("experiment", list(searchpath))


def model_overrides(target: Target, task: str) -> list[str]:
    """How ``target.model`` is composed for ``task``: its preset, else its own config on the task (see the module
    docstring), then the user's overrides."""
    if not target.quick and has_preset(target.model, task, target.searchpath):
        base = [f"experiment=lra/{target.model}-{task}"]
    else:
        base = [f"task={task}", f"model={target.model}"]
    return [*base, *target.overrides]


def quick_overrides(cfg: DictConfig) -> list[str]:
    """Quick mode: one layer where the backbone has ``n_layers`` (the model config's own widths are small)."""
    backbone = OmegaConf.select(cfg, "model.net.backbone", default=None)
    return ["model.net.backbone.n_layers=1"] if backbone is not None and "n_layers" in backbone else []


def model_config(target: Target, task: str, length: int = CHECK_LENGTH) -> DictConfig:
    """The composed config of ``target`` for ``task``, sized to ``length`` (and shrunk in quick mode)."""
    overrides = model_overrides(target, task)
    cfg = compose(overrides, target.searchpath)
    extra = length_overrides(cfg, length) + (quick_overrides(cfg) if target.quick else [])
    return compose([*overrides, *extra], target.searchpath)


def build(cfg: DictConfig, seed: int = 0) -> nn.Module:
    """The classifier of ``cfg``, with its parameters drawn from ``seed``."""
    from hydra.utils import instantiate

    torch.manual_seed(seed)
    return instantiate(cfg.model.net)


def inputs(cfg: DictConfig, lengths: Sequence[int], width: int, gen: torch.Generator, pad: str = "zero") -> torch.Tensor:
    """A batch of the task's input, (B, width) long: token ids in [1, vocab) or pixel values in [0, 255] at real
    positions; at pads ``zero`` (the collate's padding) or ``garbage`` (random values of the same kind)."""
    lengths_t = torch.as_tensor(list(lengths))
    if cfg.task.input == "tokens":
        x = torch.randint(1, int(cfg.task.vocab_size), (len(lengths_t), width), generator=gen)
    else:
        x = torch.randint(0, 256, (len(lengths_t), width), generator=gen)
    if pad == "zero":
        x = x * (torch.arange(width)[None, :] < lengths_t[:, None])
    return x


def perturb_like_trained(net: nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Move what training moves and a fresh model hides: norms' running statistics (running mean ~ N(0, 0.5^2),
    variance in [0.5, 2]), norm weights and every bias (+ N(0, scale^2)). A BatchNorm in eval mode with a non-zero
    running mean, or a bias, makes pads non-zero after it; at init both are zero and a missing mask goes unseen."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.5)
            is_norm = "norm" in type(module).__name__.lower()
            for name, p in module.named_parameters(recurse=False):
                if p.is_floating_point() and (name == "bias" or name.endswith("_bias") or is_norm):
                    p.add_(torch.randn(p.shape, generator=gen) * scale)
