"""Budget: the model's non-embedding parameter count against the task's Transformer and Mega presets.

LRA compares models at comparable sizes (Tay et al. 2021, section 4: the efficient Transformers share the vanilla
one's hyper-parameters); Mega's presets are the other reference the harness reports. Counted on the meta device
(nothing allocated; Synthesizer's Path-X logits alone are 2.1 G parameters), from each model's preset for the task
(or, for a model without one, its own config on the task) at the preset's full length. Token and position tables
are left out (``SequenceClassifier.embedding_parameter_names``): vocabularies differ by task, not by model. So are
parameters sized by the sequence length (found by building at half the length: Synthesizer's random logits,
H L^2 per layer, Linformer's projections): they are reported beside the count, since they measure the task's
length more than the model's width and depth.

Pass when the count lies in [smaller reference / ``BAND``, larger reference x ``BAND``], else warn: a model several
times larger than both baselines, or a fraction of the smaller one, does not give a comparable LRA number, but a
published configuration may be so (LRA's Linformer on Pathfinder is a quarter of its Transformer's size), so it is
flagged, not failed. The
span is wide on purpose: LRA's own presets differ by up to 250x between the two references (Image: the Transformer
11K, Mega 2.8M).
"""

from __future__ import annotations

import functools

import torch

from lra_bench.checks import PASS, SKIP, WARN, CheckResult
from lra_bench.benchmarks.model_configs import length_overrides
from lra_bench.checks.build import Target, build, compose, has_preset

BAND = 4.0
REFERENCES = ("transformer", "mega")


@functools.lru_cache(maxsize=128)
def _counts(overrides: tuple[str, ...], searchpath: tuple[str, ...] = ()) -> dict[str, int]:
    """Non-embedding parameter sizes by name of the classifier composed from ``overrides`` (built on the meta
    device where it builds there)."""
    cfg = compose(list(overrides), searchpath)
    try:
        with torch.device("meta"):
            net = build(cfg)
    except Exception:  # noqa: BLE001 - an init that computes on real values: build it for real
        net = build(cfg)
    embedding = set(net.embedding_parameter_names()) if hasattr(net, "embedding_parameter_names") else set()
    return {n: p.numel() for n, p in net.named_parameters() if n not in embedding}


@functools.lru_cache(maxsize=128)
def _at_half_length(overrides: tuple[str, ...], searchpath: tuple[str, ...] = ()) -> tuple[str, ...]:
    cfg = compose(list(overrides), searchpath)
    return tuple(length_overrides(cfg, max(int(cfg.task.max_length) // 2, 1)))


def non_embedding_count(overrides: tuple[str, ...], searchpath: tuple[str, ...] = ()) -> tuple[int, int]:
    """(non-embedding parameters not sized by the sequence length, those that are): a parameter whose size changes
    when the config's length halves is length-sized (Synthesizer's random logits, Linformer's projections)."""
    full = _counts(overrides, searchpath)
    half = _counts((*overrides, *_at_half_length(overrides, searchpath)), searchpath)
    sized = sum(n for name, n in full.items() if half.get(name) != n)
    return sum(full.values()) - sized, sized


def millions(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e5 else f"{n / 1e3:.3g}K"


def budget(target: Target) -> CheckResult:
    task = target.task
    if has_preset(target.model, task, target.searchpath):
        own, source = (f"experiment=lra/{target.model}-{task}", *target.overrides), f"lra/{target.model}-{task}"
    else:
        own, source = (f"task={task}", f"model={target.model}", *target.overrides), f"model={target.model} task={task}"
    count, sized = non_embedding_count(tuple(own), target.searchpath)
    refs = {ref: non_embedding_count((f"experiment=lra/{ref}-{task}",))[0] for ref in REFERENCES if has_preset(ref, task)}
    if not refs:
        return CheckResult("budget: parameters vs Transformer / Mega", SKIP, millions(count), f"no reference presets for {task}")
    ratios = {ref: count / n for ref, n in refs.items()}
    figure = ", ".join(f"{r:.2g}x {ref}" for ref, r in ratios.items())
    low, high = min(refs.values()), max(refs.values())
    ok = low / BAND <= count <= high * BAND
    detail = (f"{millions(count)} non-embedding ({source}" + (f"; {millions(sized)} more sized by the sequence length, left out"
                                                             if sized else "") + ") vs "
              + ", ".join(f"lra/{ref}-{task} {millions(n)}" for ref, n in refs.items()))
    if not ok:
        detail += f": outside [{millions(int(low / BAND))}, {millions(int(high * BAND))}] (LRA compares models at comparable budgets)"
    return CheckResult("budget: parameters vs Transformer / Mega", PASS if ok else WARN, figure, detail,
                       f"{millions(int(low / BAND))} .. {millions(int(high * BAND))} ({BAND:g}x band)")
