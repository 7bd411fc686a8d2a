"""The two stages of a ``pretrain=spt`` run and what passes between them.

One run folder holds both: stage 1 (self-pretraining) runs in ``<run>/pretrain/`` as a run of its own (its
checkpoints, ``result.json``, CSV log and W&B run), stage 2 (the preset's supervised training) in ``<run>/``. The
stage is thus part of the run's state on disk: a kill in stage 1 resumes stage 1 from its newest checkpoint; once
``pretrain/result.json`` exists, stage 1 is done and the same command goes on to (or resumes) stage 2, which starts
from ``pretrain/encoder.pt`` (the embedding and backbone, checksummed) with a new classification head.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.errors import ConfigError
from lra_bench.models.options.rules import is_int, is_number
from lra_bench.pretraining.objectives import OBJECTIVES
from lra_bench.training.checkpoint_io import UnusableCheckpoint, checksum_path, save_checksummed, verify_checksum
from lra_bench.training.optim import check_optimizer_and_schedule
from lra_bench.training.resume_rules import refused_differences

log = logging.getLogger(__name__)

STAGE_DIR = "pretrain"
ENCODER = "encoder.pt"
PROTOCOL_SCRATCH, PROTOCOL_SPT = "scratch", "spt"


def protocol(cfg: DictConfig) -> str:
    """``spt`` when the run self-pretrains (``pretrain=spt``), else ``scratch`` (LRA's protocol)."""
    return PROTOCOL_SPT if cfg.get("pretrain") else PROTOCOL_SCRATCH


def check_pretrain_options(cfg: DictConfig) -> None:
    """One line for a pretraining option out of its range (called with the run's other option checks)."""
    p = cfg.get("pretrain")
    if not p:
        return

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"pretrain.{key}={OmegaConf.select(p, key, default=None)!r}: {rule}")

    try:  # the recipe's values interpolate pretrain.by_task.<task>: a task without a recipe fails here
        OmegaConf.to_container(p, resolve=True)
    except Exception as e:  # noqa: BLE001 - an interpolation error, whatever OmegaConf calls it
        raise ConfigError(f"pretrain={p.get('name')}: no recipe for task {task_name(cfg)!r} (pretrain.by_task has "
                          f"{', '.join(p.get('by_task') or {})}); add pretrain.by_task.{task_name(cfg)} or set "
                          "pretrain.mask_rate, max_epochs, optimizer.lr, optimizer.weight_decay and scheduler.warmup_steps") from e
    is_count = lambda v: is_int(v) and v >= 1  # noqa: E731
    steps, epochs = p.get("max_steps"), p.get("max_epochs")
    need(steps is None or is_count(steps), "max_steps", "must be null (pretrain.max_epochs decides) or an integer >= 1")
    need(steps is not None or p.get("budget_fraction") is not None or is_count(epochs), "max_epochs",
         "must be an integer >= 1 (or set pretrain.max_steps)")
    batch = p.get("batch_size")
    need(batch is None or is_count(batch), "batch_size", "must be null (the task's) or an integer >= 1")
    fraction = p.get("budget_fraction")
    if fraction is not None:
        need(is_number(fraction) and 0 < fraction < 1, "budget_fraction",
             "must be null or a number in (0, 1): stage 1's share of trainer.max_steps")
        need(steps is None, "max_steps", "must be null with pretrain.budget_fraction (stage 1's steps are its share)")
        total = OmegaConf.select(cfg, "trainer.max_steps", default=None)
        epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
        # a max_epochs would stop stage 2 (and the run from scratch it is compared with) before its share of steps
        if not (is_int(total) and total >= 2 and 1 <= stage_one_steps(total, fraction) < total) or epochs not in (-1, None):
            raise ConfigError(f"pretrain.budget_fraction={fraction}: trainer.max_steps={total!r} (trainer.max_epochs="
                              f"{epochs!r}) must be the budget of both "
                              "stages in optimizer steps (an integer >= 2, with trainer.max_epochs=-1), enough for each "
                              "stage to take at least one")
    need(p.get("objective") in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}")
    rate = p.get("mask_rate")
    need(is_number(rate) and 0 < rate < 1, "mask_rate", "must be a number in (0, 1)")
    # stage 1's own optimizer, schedule and clipping, held to the rules the run's are (training/options.py)
    check_optimizer_and_schedule(lambda key: OmegaConf.select(p, key, default=None), need)
    clip = p.get("gradient_clip_val")
    need(clip is None or (is_number(clip) and clip >= 0), "gradient_clip_val",
         "must be null or a number >= 0 (0 or null: no clipping; Lightning ignores a negative one)")
    if not cfg.get("train", True):
        raise ConfigError(f"pretrain={p.get('name')} with train=false: neither stage would train, and the test would score "
                          "untrained weights as a self-pretrained run; drop pretrain (or set train=true)")
    if cfg.get("lra_code"):
        raise ConfigError("pretrain=spt with lra_code=true: LRA's released code never self-pretrains (and pads every "
                          "row to the task length); run SPT with lra_code=false")


def stage_one_steps(total: int, fraction: float) -> int:
    """Stage 1's share of a two-stage budget of ``total`` optimizer steps."""
    return int(round(total * float(fraction)))


def task_name(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "task.name", default=""))


def stage_one_config(cfg: DictConfig) -> DictConfig:
    """Stage 1's config, derived from the run's: its folder ``<run>/pretrain``, ``pretrain.max_steps`` optimizer
    steps (its share of ``trainer.max_steps`` with ``pretrain.budget_fraction``, or ``pretrain.max_epochs``), the
    recipe's optimizer, schedule and gradient clipping, no validation, no test, no chance diagnosis (stage 2's
    only), the latest checkpoint kept instead of the best-validation one, W&B job type ``pretrain`` in the run's
    group."""
    stage = copy.deepcopy(cfg)
    p = stage.pretrain
    with open_dict(stage):
        if p.get("budget_fraction") is not None:
            p.max_steps = stage_one_steps(int(cfg.trainer.max_steps), p.budget_fraction)
            p.budget_fraction = None
        stage.paths.output_dir = str(Path(cfg.paths.output_dir) / STAGE_DIR)
        stage.train, stage.test, stage.rerun, stage.ckpt_path = True, False, False, None
        if p.max_steps is not None:
            stage.trainer.max_steps, stage.trainer.max_epochs = int(p.max_steps), -1
        else:
            stage.trainer.max_steps, stage.trainer.max_epochs = -1, int(p.max_epochs)
        stage.trainer.gradient_clip_val = p.gradient_clip_val
        stage.trainer.limit_val_batches, stage.trainer.num_sanity_val_steps = 0, 0
        stage.optimizer = OmegaConf.merge(cfg.optimizer, p.optimizer)
        stage.scheduler = OmegaConf.merge(cfg.scheduler, p.scheduler)
        callbacks = stage.get("callbacks") or {}
        callbacks.pop("chance", None)
        if "model_checkpoint" in callbacks:
            callbacks.model_checkpoint.monitor = None
            callbacks.model_checkpoint.filename = "latest-step{step}"
        wandb = (stage.get("logger") or {}).get("wandb")
        if wandb is not None:
            wandb.name = f"{wandb.name}:pretrain"
            wandb.job_type = "pretrain"
            wandb.group = wandb_group(cfg)
            wandb.tags = with_tags(wandb.tags, "spt", "pretrain")
            wandb.id = None
    return stage


def stage_two_config(cfg: DictConfig) -> DictConfig:
    """Stage 2's config: the run's, with its W&B run in the same group as stage 1's, and with
    ``pretrain.budget_fraction`` the share of ``trainer.max_steps`` stage 1 did not take."""
    if not cfg.get("pretrain"):
        return cfg
    check_pretrain_options(cfg)  # the budget is checked before it is split (a sweep's job checks here first)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        wandb = (cfg.get("logger") or {}).get("wandb")
        if wandb is not None:
            wandb.group = wandb_group(cfg)
            wandb.tags = with_tags(wandb.tags, "spt")
        fraction = cfg.pretrain.get("budget_fraction")
        if fraction is not None:  # split here once: each stage's own config then checks as any other
            total = int(cfg.trainer.max_steps)
            cfg.pretrain.max_steps = stage_one_steps(total, fraction)
            cfg.trainer.max_steps = total - cfg.pretrain.max_steps
            cfg.pretrain.budget_fraction = None
    return cfg


def with_tags(tags: Any, *extra: str) -> list[str]:
    """``tags`` and ``extra`` in order, each once (stage 1's config is derived from stage 2's, already tagged)."""
    return list(dict.fromkeys([*(tags or []), *extra]))


def wandb_group(cfg: DictConfig) -> str:
    """Both stages' W&B group: the sweep's in a multirun, else ``<run_name>-spt-seed<seed>``."""
    group = OmegaConf.select(cfg, "logger.wandb.group", default=None)
    return group or f"{cfg.run_name}-spt-seed{cfg.seed}"


def save_encoder(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """The pretrained embedding and backbone, written whole or not at all with its checksum sidecar, as every
    checkpoint is (``checkpoint_io.save_checksummed``; checked on load: a truncated or edited file is never
    fine-tuned from)."""
    save_checksummed({"state_dict": state, "meta": meta}, path)


def load_encoder(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``save_encoder``'s state and meta, after its checksum; ``ConfigError`` naming the file otherwise."""
    sidecar = checksum_path(path)
    if not (path.is_file() and sidecar.is_file()):
        missing = path if not path.is_file() else sidecar
        raise ConfigError(f"{path}: the pretrained encoder cannot be read (no such file: {missing}); rerun with "
                          "rerun=true to pretrain again")
    try:
        verify_checksum(path)
    except UnusableCheckpoint as e:
        raise ConfigError(f"{path}: its checksum ({sidecar.name}) does not match: the file changed after stage 1 "
                          "wrote it; rerun with rerun=true to pretrain again") from e
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return saved["state_dict"], saved["meta"]


def start_from_encoder(net: torch.nn.Module, path: Path, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load the pretrained embedding and backbone into stage 2's classifier (its head stays new); every encoder
    weight must fit, and every classifier weight but the head's must come from it. ``run_config``: stage 2's, held
    against the one stage 1 recorded: a run folder reused with another model, task, seed or recipe (``paths.output_dir``
    given, a preset edited) would otherwise fine-tune a stale encoder whose weights fit."""
    state, meta = load_encoder(path)
    saved = meta.get("run_config")
    listed = refused_differences(saved, run_config) if saved is not None and run_config is not None else ""
    if listed:
        raise ConfigError(f"{path} was pretrained with other {listed}; rerun with rerun=true to pretrain again, or use "
                          "the values stage 1 ran with")
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    unexpected = [k for k in state if k not in own]
    # load_state_dict raises a multi-line RuntimeError for a shape mismatch even with strict=False: named here first
    resized = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
               if k in own and v.shape != own[k].shape]
    problems = [f"{what} {found[:3]}" for what, found in (("missing", missing), ("unexpected", unexpected),
                                                           ("other shapes", resized)) if found]
    if problems:
        raise ConfigError(f"{path} does not fit this model ({'; '.join(problems)}): stage 1 ran another model; rerun "
                          "with rerun=true to pretrain again")
    net.load_state_dict(state, strict=False)
    log.info("stage 2 starts from the pretrained encoder %s (stage 1: %s steps, objective %s)", path,
             meta.get("global_step"), meta.get("objective"))
    return {k: v for k, v in meta.items() if k != "run_config"}


def stage_two_started(run_dir: Path) -> bool:
    """Whether stage 2 has begun from stage 1's encoder (a checkpoint or a result of its own in ``run_dir``): stage 1
    is then settled as it is, even when a longer ``trainer.max_time`` would let a time-cut stage 1 go on (its new
    encoder would reach no one, and the budget would count steps stage 2 never started from)."""
    run_dir = Path(run_dir)
    return (any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "result.json").is_file()
            or (run_dir / "result-cut-by-max_time.json").is_file())


def budget(run_dir: Path, finetune: dict[str, Any]) -> dict[str, Any]:
    """Stage 2's result gets stage 1's recipe and figures and the run's budget over both stages (optimizer steps,
    training tokens, wall time): ``pretrain/*`` and ``budget/*`` keys, flat for the W&B summary and the report."""
    from lra_bench.training.run_state import finished_result

    first = finished_result(Path(run_dir) / STAGE_DIR) or {}
    out: dict[str, Any] = {
        "pretrain": first.get("pretrain"),
        "pretrain/objective": first.get("objective"),
        "pretrain/mask_rate": first.get("mask_rate"),
        "pretrain/loss": first.get("pretrain/loss"),
        "pretrain/steps": first.get("global_step"),
        "pretrain/tokens_seen": first.get("train/tokens_seen"),
        "pretrain/wall_time_s": first.get("wall_time_s"),
        "pretrain/stop_reason": first.get("stop_reason"),  # max_time: stage 1 was cut short by its time limit
    }

    def total(a: Any, b: Any) -> Any:
        return a + b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None

    out["budget/total_steps"] = total(out["pretrain/steps"], finetune.get("global_step"))
    out["budget/total_tokens"] = total(out["pretrain/tokens_seen"], finetune.get("train/tokens_seen"))
    out["budget/total_wall_time_s"] = total(out["pretrain/wall_time_s"], finetune.get("wall_time_s"))
    return out
