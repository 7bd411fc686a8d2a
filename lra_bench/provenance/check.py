"""Which keys a preset must record, and whether a composed config matches its records.

Required keys: every leaf key that the preset file sets, and the experiment and ``recipe/`` files it pulls in
through its ``defaults`` (an efficient-Transformer preset inherits the Transformer preset of its task), except the
harness-only keys (``harness_keys``). Lists are leaves. Records may hold further keys (upstream defaults that the
model file sets), as long as they exist in the composed config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from lra_bench.config import CONFIG_DIR
from lra_bench.provenance.harness_keys import is_harness_only
from lra_bench.provenance.loader import Entry, values_equal

EXPERIMENT_DIR = CONFIG_DIR / "experiment"
_MISSING = object()


def _leaf_keys(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaf_keys(v, f"{prefix}{k}.") for k, v in node.items()))
    return {prefix[:-1]} if prefix else set()  # an empty body sets nothing


def preset_files(preset_file: Path) -> list[Path]:
    """The preset file, then every experiment or recipe file its defaults pull in (transitively)."""
    body = yaml.safe_load(preset_file.read_text()) or {}
    files = [preset_file]
    for item in body.get("defaults", []):
        if isinstance(item, str) and item != "_self_":
            files += preset_files(EXPERIMENT_DIR / f"{item.lstrip('/').removeprefix('experiment/')}.yaml")
        elif isinstance(item, dict):
            for group, option in item.items():
                if not group.startswith("override") and option is not None:  # e.g. /recipe: s4
                    files += preset_files(CONFIG_DIR / group.lstrip("/") / f"{option}.yaml")
    return files


def required_keys(preset_file: Path) -> set[str]:
    keys: set[str] = set()
    for path in preset_files(preset_file):
        body = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
        keys |= _leaf_keys(body)
    return {k for k in keys if not is_harness_only(k)}


def resolved(cfg: DictConfig, key: str) -> Any:
    """The resolved value at a dotted key (containers as plain lists/dicts), or ``_MISSING``."""
    value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def problems(cfg: DictConfig, preset_file: Path, entries: dict[str, Entry]) -> list[str]:
    """One line per disagreement between the composed preset and its records (empty when they agree)."""
    out = [f"{key}: set by the preset but has no record (add one with source+line or deviation)"
           for key in sorted(required_keys(preset_file) - set(entries))]
    for key, entry in sorted(entries.items()):
        value = resolved(cfg, key)
        if value is _MISSING:
            out.append(f"{key}: recorded but not a key of the composed config")
        elif not values_equal(value, entry.value):
            out.append(f"{key}: the preset resolves to {value!r}, its record says {entry.value!r} ({entry.describe()})")
    return out


def annotate(yaml_text: str, cfg: DictConfig, entries: dict[str, Entry]) -> str:
    """The resolved YAML with each recorded key's source (or deviation) as a comment beside it; a value that no
    longer matches its record (a command-line override) is flagged."""
    lines, path = [], []  # path: (indent, key) of the enclosing mappings
    for line in yaml_text.splitlines():
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if stripped and not stripped.startswith("- ") and ":" in stripped:
            key = stripped.split(":", 1)[0]
            while path and path[-1][0] >= indent:
                path.pop()
            dotted = ".".join([k for _, k in path] + [key])
            path.append((indent, key))
            entry = entries.get(dotted)
            if entry is not None:
                value = resolved(cfg, dotted)
                flag = "" if values_equal(value, entry.value) else f"OVERRIDDEN (preset: {entry.value!r}) "
                line = f"{line}  # {flag}{entry.describe()}"
        lines.append(line)
    return "\n".join(lines)
