"""Hydra plumbing shared by the entry points: the config folder, resolvers, name checks, error exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.errors import ConfigError, LRAError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"
CONFIG_PATH = str(CONFIG_DIR)  # absolute, so an entry point in any subpackage finds it (hydra.main)

if not OmegaConf.has_resolver("lra_project_root"):
    OmegaConf.register_new_resolver("lra_project_root", lambda: str(PROJECT_ROOT))


def hydra_runtime():
    """The running Hydra app's config, or None (compose API, tests, library use)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except ValueError:
        return None


def is_multirun() -> bool:
    from hydra.types import RunMode

    hc = hydra_runtime()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def _sweep_name() -> str:
    """Default multirun name: the command's overrides as a folder name (stable across reruns)."""
    from lra_bench.training.run_state import slug

    hc = hydra_runtime()
    return slug(",".join(hc.overrides.task)) if hc is not None else "adhoc"


def _run_label(run_name: str) -> str:
    """W&B run name: run_name, plus the job's overrides inside a multirun."""
    from lra_bench.training.run_state import slug

    hc = hydra_runtime()
    return f"{run_name}:{slug(hc.job.override_dirname)}" if is_multirun() and hc.job.override_dirname else run_name


_RESOLVERS = {
    "lra_slug": lambda overrides: __import__("lra_bench.training.run_state", fromlist=["slug"]).slug(str(overrides or "")),
    "lra_sweep_name": _sweep_name,
    "lra_multirun_only": lambda value: value if is_multirun() else None,
    "lra_run_label": _run_label,
}
for _name, _fn in _RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def available(group: str) -> list[str]:
    """Config names in a group folder (``lra`` experiments as ``lra/<name>``)."""
    folder = CONFIG_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def check_names(cfg: DictConfig) -> None:
    """Fail early, with the valid choices, when a task or model name is not one we know."""
    for group in ("task", "model"):
        name = OmegaConf.select(cfg, f"{group}.name")
        valid = available(group)
        if name not in valid:
            raise ConfigError(f"unknown {group} {name!r}; valid {group}s: {', '.join(valid)} (conf/{group}/)")


def resolve_vocab_size(cfg: DictConfig, datamodule: Any | None = None) -> None:
    """Fill ``task.vocab_size`` from the data when the tokenizer builds its vocabulary (``chars``).

    A DataModule that knows its vocabulary exposes ``vocab_size``; it wins over the config, which
    holds the fixed sizes (bytes 257, pixels 256, ListOps 17) or null for data-dependent ones.
    """
    if datamodule is None and OmegaConf.select(cfg, "task.vocab_size") is not None:
        return
    if datamodule is None:
        from hydra.utils import instantiate

        datamodule = instantiate(cfg.task.datamodule)
    size = getattr(datamodule, "vocab_size", None)
    if size is not None and size != cfg.task.vocab_size:
        with open_dict(cfg):
            cfg.task.vocab_size = int(size)


def check_multirun_ddp(cfg: DictConfig) -> None:
    """Refuse a local multirun with multi-process DDP: Lightning starts ranks > 0 by re-running the
    command line, which re-launches the whole sweep in every rank (hydra#2070)."""
    if not is_multirun():
        return
    hc = hydra_runtime()
    launcher = str(OmegaConf.select(hc, "launcher._target_", default="") if hc is not None else "")
    trainer = cfg.get("trainer", {})
    strategy = str(trainer.get("strategy", "auto"))
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, (int, str)):
        many = str(devices) in ("-1", "auto") or (str(devices).isdigit() and int(devices) > 1)
    else:  # a list of device ids
        many = len(devices) > 1
    many = many or nodes > 1
    if "ddp" in strategy and many and launcher.endswith("BasicLauncher"):
        raise ConfigError(
            f"trainer.strategy={strategy} with trainer.devices={devices} inside a local multirun (-m) would re-launch "
            "the whole sweep in every DDP rank (hydra#2070). Run one `python -m lra_bench.train ... trainer=ddp` per "
            "configuration, or sweep through the SLURM launcher (hydra/launcher=lra_slurm), one process group per job.")


def exit_on_lra_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Entry-point wrapper: an ``LRAError`` prints one line and exits 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LRAError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
