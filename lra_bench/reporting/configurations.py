"""What makes two runs seeds of one configuration, and how a report names configurations that differ.

A report cell may pool only the seeds of one configuration: the same model, task *and data variant*, experiment,
and the same resolved settings apart from the seed. ``settings`` is a run's resolved config, flattened to dotted
keys, less the keys that change nothing about what is trained (``neutral``: seeds, paths, loggers, callbacks,
devices, the run's and sweep's names). Each run folder keeps its resolved config as ``csv/hparams.yaml`` (what the
run logged, written by the CSV logger every default run has) and ``.hydra/config.yaml`` (the composed config, its
interpolations resolved here where they can be); a W&B run keeps it as its run config. A run with neither is
known only by its experiment and command-line overrides.

``task_variant`` tells a run on the LRA task's own data from one on another data set of the same task (the quick
short ListOps, the easy quick Pathfinder): the data keys (``DATA_KEYS``) of its config against those of
``conf/task/<task>.yaml``. Such a run is not an LRA result and never sits in an LRA column.

``spt_recipe`` tells the protocol: a run self-pretrained on its task's training inputs before the preset's training
(``pretrain=spt``; Amos, Berant & Gupta, ICLR 2024) from one trained from scratch (LRA's protocol). The protocol
is part of a configuration's identity (never pooled) and its choice is not a change to the preset: a paper preset
run with ``pretrain=spt`` is that preset under SPT; a ``pretrain.*`` override is a change, as any other.

``label`` names a configuration by what differs from the reference configuration of its (model, task, variant,
protocol): the paper preset's when one ran, else the one with the most runs.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger("lra_bench.reporting.configurations")

# dotted-key prefixes (a whole key or the part before a '.') that never change what is trained
NEUTRAL_PREFIXES = ("paths", "logger", "hydra", "callbacks", "run_name", "sweep_name", "rerun", "note",
                    "optimized_metric", "on_chance", "chance", "checkpoint_every_n_steps",
                    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.precision",
                    "trainer.sync_batchnorm", "trainer.plugins", "trainer.log_every_n_steps",
                    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.enable_checkpointing",
                    "trainer.default_root_dir", "task.datamodule.num_workers", "task.datamodule.pin_memory",
                    "task.datamodule.decode_workers", "task.datamodule.data_dir", "task.datamodule.cache_dir")
# command-line group choices that only pick devices, loggers, callbacks or paths
NEUTRAL_GROUPS = ("trainer", "logger", "callbacks", "paths", "hydra", "sweep", "hparams_search")
# keys of task.datamodule that say which data set a run read (another value: another data set, not the LRA task)
DATA_KEYS = ("dirname", "hf_path", "resolution", "difficulty")
LRA_CODE = "lra_code"  # the top-level switch to LRA's released code (its defects included): marked in the report
PRETRAIN = "pretrain"  # the config group of self-pretraining (conf/pretrain/<recipe>.yaml); null: from scratch
PROTOCOL = "protocol"  # result.json: "scratch" or "spt" (lra_bench.pretraining.stages); absent in older files: scratch


def neutral(key: str) -> bool:
    """Whether a dotted config key changes nothing about what is trained (a seed, a path, a logger, a device)."""
    return key.rsplit(".", 1)[-1] == "seed" or any(key == p or key.startswith(p + ".") for p in NEUTRAL_PREFIXES)


def override_key(override: str) -> str:
    """``+a.b=1`` / ``~a.b`` / ``a.b=1`` -> ``a.b``."""
    return override.lstrip("~+").split("=", 1)[0]


def neutral_override(override: str) -> bool:
    """An override that leaves what is trained alone: the experiment itself, a neutral group choice
    (``trainer=gpu``, ``hydra/launcher=...``) or a neutral key. ``lra_code=...`` and ``pretrain=<recipe>`` count too:
    such a run is still its paper preset, in another row marked [LRA code] (``uses_lra_code``) or [SPT]
    (``spt_recipe``); ``pretrain.<key>=...`` changes the recipe and is not neutral."""
    key = override_key(override)
    return key in ("experiment", LRA_CODE, PRETRAIN) or key.split("/")[0] in NEUTRAL_GROUPS or neutral(key)


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none"))


def spt_recipe(run: dict[str, Any]) -> str | None:
    """The self-pretraining recipe of a run (``spt``, ``spt_s4``), None for a run trained from scratch. Read from
    result.json (``protocol``, ``pretrain``), else the resolved config (``pretrain.name``: a W&B run), else the
    ``pretrain=<recipe>`` override; a file with none of them (older than SPT) is from scratch."""
    if run.get(PROTOCOL) == "scratch":
        return None
    recipe = run.get(PRETRAIN) if isinstance(run.get(PRETRAIN), str) else (run.get("config") or {}).get(f"{PRETRAIN}.name")
    if recipe is None:
        chosen = [o.split("=", 1)[1] for o in run.get("overrides") or [] if override_key(o) == PRETRAIN and "=" in o]
        recipe = None if not chosen or _null(chosen[-1]) else chosen[-1]
    return str(recipe) if recipe else ("spt" if run.get(PROTOCOL) == "spt" else None)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: leaf}``; lists are leaves."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def _resolved_hydra_config(path: Path) -> dict[str, Any]:
    """``.hydra/config.yaml`` flattened, each interpolation resolved where it can be outside the run (a
    ``${hydra:...}`` value cannot: it is kept as written)."""
    from omegaconf import OmegaConf

    import lra_bench.config  # noqa: F401  (registers the project's resolvers)

    cfg = OmegaConf.load(path)
    out = {}
    for key, raw in flatten(OmegaConf.to_container(cfg, resolve=False)).items():
        try:
            value = OmegaConf.select(cfg, key)
            out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except Exception:  # an interpolation only the Hydra run could resolve
            out[key] = raw
    return out


def stored_config(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run folder's resolved config, flattened, and the file it came from; (None, None) when it keeps none
    (a file that cannot be read is passed over with a warning naming it)."""
    import yaml

    hparams, composed = folder / "csv" / "hparams.yaml", folder / ".hydra" / "config.yaml"
    for path, read in ((hparams, lambda p: flatten(yaml.safe_load(p.read_text()))), (composed, _resolved_hydra_config)):
        if not path.is_file():
            continue
        try:
            found = read(path)
        except Exception as e:  # a truncated or hand-edited file: the next source, or the run's overrides
            log.warning("cannot read the config %s (%s: %s); passing over it", path, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            continue
        if found and found != {"": None}:
            return found, str(path)
    return None, None


def settings(run: dict[str, Any]) -> dict[str, Any]:
    """What a run trained, apart from its seed: its resolved config less the neutral keys, with its experiment;
    for a run without a stored config, its experiment and non-neutral command-line overrides."""
    if run.get("config") is not None:
        # ``pretrain: null`` (a run from scratch since the group exists) is the same as no key (one from before)
        found = {k: v for k, v in run["config"].items() if not neutral(k) and not (k == PRETRAIN and v is None)}
    else:
        found = {override_key(o): o.split("=", 1)[1] if "=" in o else None
                 for o in run.get("overrides") or [] if not neutral_override(o)}
    if run.get(LRA_CODE) is True:
        found[LRA_CODE] = True
    recipe = spt_recipe(run)
    if recipe is not None:  # the protocol, whatever the config kept: never the same configuration as from scratch
        found[PROTOCOL] = f"spt:{recipe}"
    return {"experiment": run.get("experiment"), **found}


def identity(run: dict[str, Any]) -> str:
    """A hashable, order-free form of ``settings``: equal for the seeds of one configuration only."""
    return json.dumps(settings(run), sort_keys=True, default=str)


def uses_lra_code(run: dict[str, Any]) -> bool:
    return run.get(LRA_CODE) is True or (run.get("config") or {}).get(LRA_CODE) is True


@lru_cache(maxsize=None)
def _task_data(task: str) -> dict[str, Any]:
    """The data keys of ``conf/task/<task>.yaml`` (its ``defaults`` merged first, as Hydra does)."""
    from omegaconf import OmegaConf

    from lra_bench.config import CONFIG_DIR

    def load(name: str):
        path = CONFIG_DIR / "task" / f"{name}.yaml"
        if not path.is_file():
            return OmegaConf.create()
        cfg = OmegaConf.load(path)
        parents = [load(d) for d in cfg.pop("defaults", []) if isinstance(d, str)]
        return OmegaConf.merge(*parents, cfg)

    datamodule = load(task).get("datamodule") or {}
    return {k: datamodule[k] for k in DATA_KEYS if k in datamodule}


def task_variant(run: dict[str, Any]) -> str | None:
    """None for a run on the LRA task's own data; else what its data is (``dirname=listops-quick``). A run with no
    stored config is told by its experiment: the quick experiments use their own data."""
    config = run.get("config")
    if config is None:
        experiment = run.get("experiment") or ""
        return f"experiment={experiment}" if experiment.startswith("quick") else None
    lra = _task_data(run["task"])
    differs = [f"{k}={config[f'task.datamodule.{k}']}" for k in DATA_KEYS
               if k in lra and f"task.datamodule.{k}" in config and config[f"task.datamodule.{k}"] != lra[k]]
    return ", ".join(differs) or None


# --- naming configurations by what differs ---------------------------------------------------------------------

def _short(key: str, keys: set[str]) -> str:
    """The last part of a dotted key (``pretrain.`` kept: stage 1's setting is not stage 2's), unless another
    differing key ends the same way."""
    def tail(k: str) -> str:
        return (f"{PRETRAIN}." if k.startswith(f"{PRETRAIN}.") else "") + k.rsplit(".", 1)[-1]

    return tail(key) if sum(tail(k) == tail(key) for k in keys) == 1 else key


def _value(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def differences(mine: dict[str, Any], reference: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, my value, the reference's) for every key that differs; a key one side lacks has the value None."""
    keys = sorted(k for k in set(mine) | set(reference) if mine.get(k) != reference.get(k) or (k in mine) != (k in reference))
    return [(k, mine.get(k), reference.get(k)) for k in keys]


def reference_group(run: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(model, task, variant, SPT recipe): the runs one reference configuration names the others against. An SPT
    run is named against the SPT runs of its preset, so that the recipe's own settings are not differences."""
    return run["model"], run["task"], task_variant(run), spt_recipe(run)


def reference_identities(runs: list[dict[str, Any]], scale_of) -> dict[tuple[str, str, str | None, str | None], str]:
    """Per ``reference_group``: the identity the others are named against (the paper preset's when one ran,
    then the one with the most runs, then the first in sorted order)."""
    counts: dict[tuple, Counter] = defaultdict(Counter)
    preset: dict[tuple, Counter] = defaultdict(Counter)
    for r in runs:
        group = reference_group(r)
        counts[group][identity(r)] += 1
        if scale_of(r) == "paper preset":
            preset[group][identity(r)] += 1
    return {g: min((preset[g] or c).items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in counts.items()}


def label(diffs: list[tuple[str, Any, Any]], most: int = 3) -> str:
    """``lr=0.0005, n_layers=1`` (the first ``most`` differences, then '+k more'); the LRA-code switch and the
    protocol have their own markers and are left out."""
    diffs = [d for d in diffs if d[0] not in (LRA_CODE, PROTOCOL)]
    keys = {k for k, _, _ in diffs}
    shown = list(dict.fromkeys(f"{_short(k, keys)}={_value(v)}" for k, v, _ in diffs))
    text = ", ".join(shown[:most])
    return text + (f", +{len(shown) - most} more" if len(shown) > most else "")


def varying_keys(runs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between configurations of the same model, task and protocol (the data keys
    among them), and ``pretrain.name`` (the recipe; null from scratch) where runs of one model and task differ in
    protocol: what, beside model and task, must group runs so that no group pools configurations."""
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    recipes: dict[tuple[str, str], set] = defaultdict(set)
    for r in runs:
        if r.get("config") is not None:
            by_group[(r["model"], r["task"], spt_recipe(r))].append(settings(r))
            recipes[(r["model"], r["task"])].add(spt_recipe(r))
    found: set[str] = {f"{PRETRAIN}.name"} if any(len(s) > 1 for s in recipes.values()) else set()
    for configs in by_group.values():
        for key in {k for c in configs for k in c} - {"experiment", PROTOCOL}:
            if len({json.dumps(c.get(key), default=str) for c in configs}) > 1:
                found.add(key)
    return sorted(found)
