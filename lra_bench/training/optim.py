"""AdamW parameter groups and the warmup + decay learning-rate schedule.

Parameter groups:
- A parameter may carry ``p._optim = {"lr": ..., "weight_decay": ...}`` (the S4 convention): every
  distinct dict becomes its own group with those settings on top of the base ones. This is the
  per-parameter override hook S4/S4D use for their SSM learning rates.
- With ``no_decay_norm_bias_embedding`` the rest is split into a decayed group and a group without
  weight decay (biases, norm weights, embedding tables, 1-D parameters). Mega's recipe decays
  everything (fairseq ``adam`` with decoupled decay), so the option is off by default.

The schedule multiplies each group's own lr, so override groups warm up and decay too (as in S4).
Its length comes from the trainer (``estimated_stepping_batches``: epochs or max_steps, data size,
batch, accumulation and world size), never from a hand-set step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

from lra_bench.models.options.rules import is_int, is_number

DECAYS = ("linear", "cosine", "constant", "rsqrt")
NO_DECAY_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.modules.batchnorm._NormBase)


def check_optimizer_and_schedule(select: Callable[[str], Any], need: Callable[[bool, str, str], None]) -> None:
    """The ranges of the optimizer's and the schedule's options, shared by the run's option checks and stage 1's own
    (``pretrain.optimizer``, ``pretrain.scheduler``): ``select(key)`` reads a value, ``need(ok, key, rule)`` raises
    the one-line error. AdamW's betas and eps are held here, before the run: torch.optim.AdamW would raise (a beta of
    1) or index past the end (one beta) only when fit builds the optimizer, with a traceback."""
    lr = select("optimizer.lr")
    need(is_number(lr) and lr > 0, "optimizer.lr", "must be a number > 0 and finite")
    wd = select("optimizer.weight_decay")
    need(wd is None or (is_number(wd) and wd >= 0), "optimizer.weight_decay", "must be a number >= 0 and finite")
    betas = select("optimizer.betas")  # null: AdamW's defaults
    need(betas is None or (isinstance(betas, Sequence) and not isinstance(betas, str) and len(betas) == 2
                           and all(is_number(b) and 0 <= b < 1 for b in betas)),
         "optimizer.betas", "must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    eps = select("optimizer.eps")
    need(eps is None or (is_number(eps) and eps > 0), "optimizer.eps", "must be a number > 0 and finite")
    need(select("scheduler.decay") in DECAYS, "scheduler.decay", f"must be one of {', '.join(DECAYS)}")
    warmup = select("scheduler.warmup_steps")
    need(warmup is None or (is_int(warmup) and warmup >= 0), "scheduler.warmup_steps", "must be null or an integer >= 0")


def _no_decay_names(model: nn.Module) -> set[str]:
    """Biases, 1-D parameters, and every parameter of norm or embedding modules."""
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, NO_DECAY_TYPES) or p_name.endswith("bias") or p.ndim <= 1:
                names.add(full)
    return names


def build_param_groups(
    model: nn.Module, lr: float, weight_decay: float, no_decay_norm_bias_embedding: bool = False
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into AdamW groups (see the module docstring)."""
    no_decay = _no_decay_names(model) if no_decay_norm_bias_embedding else set()
    base = {"params": [], "names": [], "lr": lr, "weight_decay": weight_decay}
    plain_no_decay = {"params": [], "names": [], "lr": lr, "weight_decay": 0.0}
    overrides: dict[tuple, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        special = getattr(p, "_optim", None)
        if special:
            key = tuple(sorted(special.items()))
            group = overrides.setdefault(key, {"params": [], "names": [], "lr": lr, "weight_decay": weight_decay, **special})
        elif name in no_decay:
            group = plain_no_decay
        else:
            group = base
        group["params"].append(p)
        group["names"].append(name)
    return [g for g in (base, plain_no_decay, *overrides.values()) if g["params"]]


def describe_param_groups(groups: Iterable[dict[str, Any]]) -> str:
    """One line per group, printed at start-up: tensors, parameters, lr, weight decay, examples."""
    lines = []
    for i, g in enumerate(groups):
        n = sum(p.numel() for p in g["params"])
        names = g.get("names", [])
        example = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        lines.append(
            f"Optimizer group {i} | {len(g['params'])} tensors | {n} params | lr {g['lr']:.3g} | "
            f"weight_decay {g['weight_decay']:.3g} | {example}"
        )
    return "\n".join(lines)


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    decay: str = "linear",
    start_factor: float = 0.0,
    final_factor: float = 0.0,
    warmup_power: float = 1.0,
    lra_cosine: bool = False,
) -> float:
    """Multiplier of the peak lr at ``step`` (0-based count of optimizer steps taken so far).

    Warmup: ``start + (1 - start) * (step / warmup)^power`` (Mega: start = 1e-7 / lr, power 1; 2 on
    Path-X). Then ``linear`` or ``cosine`` decay from 1 to ``final_factor`` at ``total_steps``,
    ``rsqrt`` = sqrt(warmup / step) (LRA's rsqrt_decay, normalised to 1 at the end of warmup), or
    ``constant``.

    ``lra_cosine`` (set by ``lra_code``): LRA's ``cosine_decay`` as its image configs run it
    (``lra_benchmarks/utils/train_utils.py:140-144`` with ``steps_per_cycle`` = ``num_train_steps``,
    ``image/configs/*/base_*_config.py``): progress = (step - warmup) / total_steps, a cycle as long as the whole
    run but started after warmup, so the run ends at 0.5 (1 - cos(pi warmup / total)) of the peak (6.2e-5 on
    CIFAR-10: 1 warmup epoch of 200), not at ``final_factor``. By default the cosine spans warmup .. total.
    """
    if decay not in DECAYS:
        raise ValueError(f"scheduler.decay must be one of {DECAYS}, got {decay!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * (step / warmup_steps) ** warmup_power
    if decay == "constant":
        return 1.0
    if decay == "rsqrt":
        return math.sqrt(max(warmup_steps, 1) / max(step, 1))
    span = max(total_steps if lra_cosine and decay == "cosine" else total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_factor + (1.0 - final_factor) * shape


def resolve_warmup(total_steps: int, warmup_steps: int | None, warmup_fraction: float | None) -> int:
    """Warmup length in steps from exactly one of ``warmup_steps`` or ``warmup_fraction`` of the total."""
    if warmup_steps is not None and warmup_fraction is not None:
        raise ValueError("set only one of scheduler.warmup_steps and scheduler.warmup_fraction")
    if warmup_steps is not None:
        return int(warmup_steps)
    return int(round((warmup_fraction or 0.0) * total_steps))


def warmup_longer_than_schedule(warmup_steps: int, total_steps: int, start_factor: float = 0.0,
                                warmup_power: float = 1.0) -> str:
    """The start-up warning for a schedule that ends inside its warmup (Mega's preset, 3,000 warmup steps, with
    ``trainer.max_steps=30``): the lr never reaches ``optimizer.lr``, and the run learns little for a reason no
    longer warmup fixes."""
    last = max(total_steps - 1, 0)
    peak = lr_factor(last, total_steps, warmup_steps, "constant", start_factor, 1.0, warmup_power)
    return (f"lr schedule shorter than its warmup: {warmup_steps} warmup steps, but the schedule has {total_steps} "
            f"optimizer steps, so the lr ends at {peak:.2%} of optimizer.lr and never reaches it. Set "
            f"scheduler.warmup_steps (or warmup_fraction) below {total_steps}, or train longer")
