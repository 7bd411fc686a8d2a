"""The config a benchmark cell builds: a model's preset for a task, sized to the cell's length.

A model is built from its preset ``experiment=lra/<model>-<task>``. A model with no such preset (a user's own,
found on the Hydra search path through ``hydra.searchpath=[...]``) falls back to ``task=<task> model=<model>``:
the task's defaults and the model config's own sizes; the benchmark says so in its output.

``length_overrides`` sets what a preset sizes by its task's length: ``task.max_length`` and, where the backbone
has them, ``max_length`` (position tables, and the mechanisms that size things by it: Linformer's projection,
BigBird's block layout, Synthesizer's H x L x L random logits, Reformer's chunk, Sparse/Local's blocks, Luna's
positions) and ``max_positions`` (Mega), plus one position for a prepended CLS token (``pooling: cls``).

Composition here never disturbs a running Hydra app (``python -m lra_bench.bench`` composes model configs
from inside its own ``@hydra.main``): the app's global state is set aside and restored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict

PLACEHOLDER_VOCAB = 257  # tasks whose vocabulary comes from the data (null in the config) get byte-sized inputs


@dataclass(frozen=True)
class Resolved:
    """How a model is composed for a task: the overrides, and a note when it is not the model's preset."""

    model: str
    overrides: tuple[str, ...]
    note: str | None = None


@contextmanager
def _own_hydra(searchpath: Sequence[str] = ()) -> Iterator[None]:
    """Initialise Hydra on the project's conf/ for composition, setting aside (and restoring) a running app's."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.singleton import Singleton

    from lra_bench.config import CONFIG_DIR

    app = Singleton._instances.pop(GlobalHydra, None)  # a running @hydra.main's; compose needs a fresh one
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            yield
    finally:
        Singleton._instances.pop(GlobalHydra, None)
        if app is not None:
            Singleton._instances[GlobalHydra] = app


def searchpath_override(searchpath: Sequence[str]) -> list[str]:
    """``hydra.searchpath=[...]`` for composition (quoted: paths may hold characters the override grammar reads)."""
    if not searchpath:
        return []
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in searchpath)
    return [f"hydra.searchpath=[{quoted}]"]


def compose_train(overrides: Sequence[str], searchpath: Sequence[str] = ()) -> DictConfig:
    """The training config for ``overrides`` (``task.vocab_size`` filled with a placeholder where null)."""
    from hydra import compose

    with _own_hydra(searchpath):
        cfg = compose("train", overrides=[*searchpath_override(searchpath), "paths.output_dir=/tmp", *overrides])
    with open_dict(cfg):
        if cfg.task.vocab_size is None:
            cfg.task.vocab_size = PLACEHOLDER_VOCAB
    return cfg


def preset_overrides(model: str, task: str) -> list[str]:
    """The preset of ``model`` for ``task``; the two Transformer variants of the benchmark are the Transformer's."""
    if model == "transformer_vanilla":
        return [f"experiment=lra/transformer-{task}", "model.net.backbone.attention=vanilla"]
    if model == "transformer_fused":  # without attention dropout SDPA takes its fused (flash) kernel, on CPU too
        return [f"experiment=lra/transformer-{task}", "model.net.backbone.attn_dropout=0.0"]
    return [f"experiment=lra/{model}-{task}"]


def resolve(model: str, task: str, model_overrides: Sequence[str] = (), searchpath: Sequence[str] = ()) -> tuple[Resolved, DictConfig]:
    """The overrides that build ``model`` for ``task`` and the composed config (with ``model_overrides``).

    Falls back to ``task=<task> model=<model>`` when no ``lra/<model>-<task>`` preset is on the search path;
    raises Hydra's ``MissingConfigException`` when the model itself is not found either."""
    from hydra.errors import MissingConfigException

    preset = preset_overrides(model, task)
    try:
        return Resolved(model, tuple(preset)), compose_train([*preset, *model_overrides], searchpath)
    except MissingConfigException as e:
        if f"experiment/lra/{model}-{task}" not in str(e):
            raise
    fallback = [f"task={task}", f"model={model}"]
    cfg = compose_train([*fallback, *model_overrides], searchpath)
    note = (f"{model}: no preset lra/{model}-{task} on the search path; built from `task={task} model={model}` "
            f"(the task's defaults and the model config's own sizes)")
    return Resolved(model, tuple(fallback), note), cfg


def backbone_length(cfg: DictConfig, length: int) -> int:
    """Positions the backbone sees for ``length`` tokens: one more with a prepended CLS token."""
    return length + int(OmegaConf.select(cfg, "model.net.pooling", default=None) == "cls")


def length_overrides(cfg: DictConfig, length: int) -> list[str]:
    """Size the composed preset ``cfg`` to ``length`` tokens (a preset holds its task's length)."""
    out = [f"task.max_length={length}"]
    backbone = OmegaConf.select(cfg, "model.net.backbone", default=None)
    if backbone is not None:
        for key in ("max_length", "max_positions"):  # position tables and length-sized mechanisms
            if key in backbone:
                out.append(f"model.net.backbone.{key}={backbone_length(cfg, length)}")
    return out


def parameter_megabytes(overrides: Sequence[str], searchpath: Sequence[str] = ()) -> float | None:
    """The classifier's parameters in MB, counted on the meta device (nothing allocated), or None where a model
    cannot be built there. Synthesizer's random logits are H L^2 per layer: 17 GB at 16K on Text."""
    import torch
    from hydra.utils import instantiate

    try:
        cfg = compose_train(overrides, searchpath)
        with torch.device("meta"):
            net = instantiate(cfg.model.net)
        return sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
    except Exception:  # a model whose init computes on real tensors: the budget predicts from history alone
        return None


def build_net(overrides: Sequence[str], searchpath: Sequence[str] = ()):
    """The classifier for ``overrides`` and its task config."""
    from hydra.utils import instantiate

    cfg = compose_train(overrides, searchpath)
    return instantiate(cfg.model.net), cfg.task
