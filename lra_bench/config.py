"""Hydra plumbing shared by the entry points: the config folder and search path, resolvers, name checks, error exit.

Configs are found on Hydra's whole search path: ``conf/`` here, then every entry of ``LRA_BENCH_CONFIG_PATH`` (the
plugin in ``hydra_plugins/lra_bench_searchpath``) and ``hydra.searchpath=[...]``, so a model in a user's own package
is a valid ``model=<name>``."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.errors import ConfigError, LRAError

log = logging.getLogger("lra_bench.config")

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
    """Default multirun name. A multirun's is set once, from the whole command, by ``SweepSummary.on_multirun_start``
    (lra_bench/training/sweep.py) in the resolver's cache, which Hydra copies into every job's config; this runs
    only where nothing set it (a single run: its own overrides)."""
    from lra_bench.training.sweep import default_sweep_name

    hc = hydra_runtime()
    return default_sweep_name(hc.overrides.task, hc.job.config.override_dirname.exclude_keys) if hc is not None else "adhoc"


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
        # cached: Hydra copies a multirun's resolver cache into each job (load_sweep_config), so all jobs share one name
        OmegaConf.register_new_resolver(_name, _fn, use_cache=_name == "lra_sweep_name")


def runtime_searchpath(cfg: DictConfig | None = None) -> list[str]:
    """The ``hydra.searchpath`` entries of this run: from ``cfg.hydra`` (composed with the Hydra node) or the
    running app; empty for the compose API without it."""
    node = OmegaConf.select(cfg, "hydra.searchpath") if cfg is not None else None
    if node is None:
        hc = hydra_runtime()
        node = hc.searchpath if hc is not None else None
    return [str(p) for p in node or []]


def config_search_path(searchpath: Sequence[str] = ()):
    """Hydra's search path as the entry points see it: lra_bench's ``conf/``, then ``LRA_BENCH_CONFIG_PATH`` (the
    search-path plugin in ``hydra_plugins/lra_bench_searchpath``), then ``searchpath`` (``hydra.searchpath``), in the
    order Hydra itself builds it (hydra/_internal/config_loader_impl.py, ``_process_config_searchpath``)."""
    from hydra._internal.utils import create_config_search_path

    csp = create_config_search_path(CONFIG_PATH)  # runs the search-path plugins
    schema = csp.get_path().pop(-1)  # structured:// stays last, as Hydra keeps it
    for path in searchpath:
        csp.append(provider="hydra.searchpath", path=path)
    csp.append(schema.provider, schema.path)
    return csp


def config_repository(searchpath: Sequence[str] = ()):
    """Every config folder on the search path, as one Hydra repository (lists groups, loads single files)."""
    from hydra._internal.config_repository import ConfigRepository

    return ConfigRepository(config_search_path(searchpath))


def _options(repo: Any, group: str) -> list[str]:
    """Config names under ``group``, sub-groups included as ``<sub>/<name>`` (experiment ``lra/mega-text``)."""
    from hydra.core.object_type import ObjectType

    names = list(repo.get_group_options(group, ObjectType.CONFIG))
    for sub in repo.get_group_options(group, ObjectType.GROUP):
        names += [f"{sub}/{name}" for name in _options(repo, f"{group}/{sub}")]
    return names


def available(group: str, searchpath: Sequence[str] | None = None) -> list[str]:
    """Config names of a group on the whole search path (``lra`` experiments as ``lra/<name>``): lra_bench's
    ``conf/<group>/``, the folders and packages of ``LRA_BENCH_CONFIG_PATH``, and ``searchpath`` (default: this
    run's ``hydra.searchpath``)."""
    repo = config_repository(runtime_searchpath() if searchpath is None else searchpath)
    return sorted(set(_options(repo, group)))


def builtin_models(spec: str) -> list[str]:
    """``all`` or a comma-separated list of built-in model names (a ``--models`` option), as a list; ``ConfigError``
    naming the unknown ones and the valid names."""
    valid = available("model")
    models = valid if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    if not models:  # an empty --models would check nothing and report it as a pass
        raise ConfigError(f"--models={spec!r}: no model named; give all (the default) or some of: {', '.join(valid)}")
    unknown = [m for m in models if m not in valid]
    if unknown:
        raise ConfigError(f"--models: unknown {', '.join(unknown)}; built-in models: {', '.join(valid)}")
    return models


def search_path_note(searchpath: Sequence[str] = ()) -> str:
    """Where names were looked up, for error messages: the extra entries, and those Hydra cannot read."""
    sources = config_repository(searchpath).get_sources()[2:-1]  # past hydra's and ours, before the schema
    if not sources:
        return "conf/{group}/; add folders with LRA_BENCH_CONFIG_PATH or hydra.searchpath=[...]"
    parts = [s.full_path() + ("" if s.available() else " (not available: no such folder, or a package that does not import "
                                                      "or has no __init__.py)") for s in sources]
    return "conf/{group}/ and " + ", ".join(parts)


def check_names(cfg: DictConfig) -> None:
    """Fail early, with the valid choices, when a task or model name is not one we know (on the whole search path).

    Also fits a preset of another model to this one (``drop_foreign_preset_keys``), so ``experiment=lra/mega-text
    model=<yours>`` builds yours with the preset's task, optimizer and trainer, not with Mega's backbone settings."""
    searchpath = runtime_searchpath(cfg)
    for group in ("task", "model"):
        name = OmegaConf.select(cfg, f"{group}.name")
        valid = available(group, searchpath)
        if name not in valid:
            hc = hydra_runtime()
            chosen = hc.runtime.choices.get(group) if hc is not None else None
            if chosen in valid:  # the file exists; its name: says something else (check_model refuses it too)
                raise ConfigError(f"{group}={chosen}: conf/{group}/{chosen}.yaml declares name: {name}; a {group}'s name "
                                  f"must be its file name: set name: {chosen}")
            where = search_path_note(searchpath).format(group=group)
            raise ConfigError(f"unknown {group} {name!r}; valid {group}s: {', '.join(valid)} ({where})")
    drop_foreign_preset_keys(cfg)


def _declared(node: Any, own: Any, prefix: str, keep: set[str]) -> list[str]:
    """Dotted keys of ``node`` (the composed config) that ``own`` (the model's file) does not declare."""
    extra = []
    for key in list(node.keys()):
        path = f"{prefix}.{key}"
        if path in keep:
            continue
        if key not in own:
            extra.append(path)
        elif OmegaConf.is_dict(own[key]) and OmegaConf.is_dict(node._get_node(key)):
            extra += _declared(node[key], own[key], path, keep)
    return extra


def model_defaults(name: str, searchpath: Sequence[str] = ()) -> DictConfig | None:
    """``model=<name>`` composed on its own (its ``defaults`` list included, no preset), unresolved; None when the
    composition fails. Uses Hydra's config loader directly, so it works inside a running Hydra app."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.types import RunMode

    try:
        cfg = ConfigLoaderImpl(config_search_path(searchpath)).load_configuration("train", [f"model={name}"], RunMode.RUN)
    except Exception:  # the caller's own composition already succeeded; a failure here only skips the pruning
        return None
    return cfg.model


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str], prefix: str) -> None:
    """Re-apply the command line's overrides of keys under ``prefix`` (a node that was just replaced)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in overrides:
        if not text.lstrip("~+").startswith(prefix + "."):
            continue
        override = parser.parse_override(text)
        key = override.key_or_group
        if override.is_delete():
            parent, leaf = key.rsplit(".", 1)
            node = OmegaConf.select(cfg, parent)
            if node is not None:
                node.pop(leaf, None)
        else:
            OmegaConf.update(cfg, key, override.value(), force_add=True)


def drop_foreign_preset_keys(cfg: DictConfig, experiment: str | None = None, overrides: Sequence[str] | None = None) -> list[str]:
    """Fit another model's preset to this model (``experiment=lra/mega-text model=<yours>``); return the dotted keys
    it changed (also logged).

    The preset's task, optimizer, schedule and trainer settings apply as they are. Under ``model``, what it set is
    filtered against ``model=<name>`` composed alone:

    - a backbone of another class (Mega's settings for your backbone): ``model.net.backbone`` is your config's own,
      with the command line's ``model.net.backbone.*`` overrides applied again;
    - a backbone of the same class (``model=bigbird`` on the Transformer's preset): the preset's backbone settings
      apply;
    - elsewhere (``model.d_model``, ``model.dropout``, the classifier's settings under ``model.net``): the preset's
      values apply to the keys your config declares; the others (the Transformer's ``lra_code``) are
      dropped. Keys added on the command line with ``+`` or ``++`` are kept.

    ``experiment`` and ``overrides`` default to this run's (the Hydra app, or ``cfg.hydra`` when composed with it);
    nothing changes without an ``lra/<model>-<task>`` experiment of another model.
    """
    if experiment is None:
        hc = OmegaConf.select(cfg, "hydra") if OmegaConf.select(cfg, "hydra.runtime") is not None else hydra_runtime()
        experiment = OmegaConf.select(hc, "runtime.choices.experiment") if hc is not None else None
        if overrides is None:
            overrides = [str(o) for o in (OmegaConf.select(hc, "overrides.task") or [])] if hc is not None else []
    overrides = list(overrides or [])
    model = OmegaConf.select(cfg, "model.name")
    if not experiment or not str(experiment).startswith("lra/") or "-" not in str(experiment) or model is None:
        return []
    preset_model = str(experiment).removeprefix("lra/").rsplit("-", 1)[0]
    if preset_model == model:
        return []
    searchpath = runtime_searchpath(cfg)
    own, theirs = model_defaults(str(model), searchpath), model_defaults(preset_model, searchpath)
    if own is None:
        return []
    changed: list[str] = []
    own_backbone = OmegaConf.select(own, "net.backbone")
    target = OmegaConf.select(own_backbone, "_target_") if own_backbone is not None else None
    if target is not None and target != OmegaConf.select(theirs, "net.backbone._target_"):
        now = OmegaConf.to_container(cfg.model.net.backbone, resolve=False)
        mine = OmegaConf.to_container(own_backbone, resolve=False)
        changed += [f"model.net.backbone.{k}" for k in now if k not in mine or mine[k] != now[k]]
        with open_dict(cfg):
            cfg.model.net.backbone = OmegaConf.create(mine)
        _apply_overrides(cfg, overrides, "model.net.backbone")
    keep = {o.lstrip("+").split("=", 1)[0] for o in overrides if o.startswith("+")}
    dropped = _declared(cfg.model, own, "model", keep)
    with open_dict(cfg):
        for path in dropped:
            parent, key = path.rsplit(".", 1)
            OmegaConf.select(cfg, parent).pop(key)
    if changed or dropped:
        log.info("experiment=%s is %s's preset; for model %s: %s", experiment, preset_model, model, "; ".join(
            ([f"its own backbone config instead of the preset's {', '.join(k.rsplit('.', 1)[1] for k in changed)}"] if changed else [])
            + ([f"dropped {', '.join(dropped)} (not in {model}'s config)"] if dropped else [])))
    return changed + dropped


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


def _first_of_sweeps(argv: Sequence[str]) -> list[str] | None:
    """The command's config overrides, each sweep (``seed=1,2,3``) replaced by its first value; None when one cannot
    be read (Hydra then says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg or (arg.lstrip("+~").startswith("hydra")
                                                     and not arg.startswith("hydra.searchpath=")):
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - a syntax error: Hydra's own message names it
            return None
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()), None)
            if first is None:
                return None
            arg = f"{arg.split('=', 1)[0]}={first}"
        out.append(arg)
    return out


def check_override_keys(argv: Sequence[str], config_name: str = "train") -> None:
    """An override of a key the config does not have (``model.net.backbone.n_layer=2``, a typo) gets one line naming
    it, the closest key and the ``+key=value`` form, instead of Hydra's several lines; exits 2. Composes the config
    once before Hydra does (sweeps at their first value); anything else Hydra reports itself."""
    import difflib
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    overrides = _first_of_sweeps(argv)
    if not overrides:
        return

    def composed(args: list[str]) -> DictConfig:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                return compose(config_name, overrides=args)
        finally:
            GlobalHydra.instance().clear()

    try:
        composed(overrides)
        return
    except ConfigCompositionException as e:
        match = re.match(r"Could not override '([^']+)'", str(e))
        if match is None:
            return
        key = match.group(1)
    except Exception:  # noqa: BLE001 - not a key typo: Hydra reports it as it runs
        return
    parent, _, leaf = key.rpartition(".")
    hint = ""
    try:
        node = OmegaConf.select(composed([o for o in overrides if not o.split("=", 1)[0].endswith(key)]), parent) \
            if parent else None
        close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1) if OmegaConf.is_dict(node) else []
        hint = f"did you mean {parent}.{close[0]}? " if close else ""
    except Exception:  # noqa: BLE001 - no suggestion
        pass
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "...")
    print(f"error: {key}: no such option in the composed config; {hint}(a key the config does not declare is added with "
          f"+{key}={value})", file=sys.stderr)
    sys.exit(2)
