"""Read and validate ``records/<model>.yaml``: named upstream sources, and per preset one entry per dotted key.

Format (one file per built-in model, ``<model>`` = the ``conf/model/<model>.yaml`` name)::

    sources:
      lra_listops_base: {repo: google-research/long-range-arena, commit: <40 hex>, file: lra_benchmarks/...py}
    presets:
      transformer-listops:
        model.net.backbone.n_layers: {value: 4, source: lra_listops_base, line: 47}
        model.net.pooling: {value: cls, deviation: "why we differ from upstream"}

An entry has ``value`` and either ``source`` + ``line`` (+ optional ``note``) or ``deviation``, never both.
A malformed file is refused with one line naming the file, the preset and the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from lra_bench.errors import ConfigError

RECORDS_DIR = Path(__file__).resolve().parent / "records"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_ENTRY_FIELDS = {"value", "source", "line", "note", "deviation"}


class _Loader(yaml.SafeLoader):
    """YAML 1.1's float rule misses ``1e-3`` (no dot): read it as a float, as OmegaConf (our configs) does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    file: str

    def cite(self, line: int) -> str:
        return f"{self.repo}@{self.commit[:7]} {self.file}:{line}"


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    source: Source | None = None
    line: int | None = None
    note: str | None = None
    deviation: str | None = None

    def describe(self) -> str:
        """One line: where the value comes from, or why it differs from upstream."""
        if self.deviation is not None:
            return f"deviation: {self.deviation}"
        assert self.source is not None and self.line is not None
        return self.source.cite(self.line) + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class ModelRecords:
    model: str
    path: Path
    presets: dict[str, dict[str, Entry]]  # preset name -> dotted key -> entry


def values_equal(a: Any, b: Any) -> bool:
    """Exact, except numbers: equal within a relative 1e-12 (a value written out vs computed); bools are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return a == b


def _source(path: Path, name: str, raw: Any) -> Source:
    where = f"{path}: source {name!r}"
    if not isinstance(raw, dict) or set(raw) != {"repo", "commit", "file"}:
        raise ConfigError(f"{where} must have exactly repo, commit and file, got {raw!r}")
    if not _REPO.match(str(raw["repo"])):
        raise ConfigError(f"{where}: repo {raw['repo']!r} is not owner/name")
    if not _COMMIT.match(str(raw["commit"])):
        raise ConfigError(f"{where}: commit {raw['commit']!r} is not 40 lowercase hex digits (write the full commit)")
    if not isinstance(raw["file"], str) or not raw["file"]:
        raise ConfigError(f"{where}: file must be the path inside the repository, got {raw['file']!r}")
    return Source(raw["repo"], raw["commit"], raw["file"])


def _entry(path: Path, preset: str, key: str, raw: Any, sources: dict[str, Source]) -> Entry:
    where = f"{path}: {preset} {key}"
    if not isinstance(raw, dict) or "value" not in raw or not set(raw) <= _ENTRY_FIELDS:
        raise ConfigError(f"{where} must be a mapping with value and source+line or deviation "
                          f"(fields {sorted(_ENTRY_FIELDS)}), got {raw!r}")
    if ("source" in raw) == ("deviation" in raw):
        raise ConfigError(f"{where} needs exactly one of source (with line) and deviation, got {sorted(raw)}")
    if "deviation" in raw:
        if not isinstance(raw["deviation"], str) or not raw["deviation"].strip() or {"line", "note"} & set(raw):
            raise ConfigError(f"{where}: a deviation is one non-empty reason string, without line or note")
        return Entry(key, raw["value"], deviation=raw["deviation"])
    if raw["source"] not in sources:
        raise ConfigError(f"{where}: source {raw['source']!r} is not under sources: (known: {sorted(sources)})")
    line = raw.get("line")
    if not isinstance(line, int) or isinstance(line, bool) or line < 1:
        raise ConfigError(f"{where}: line must be the 1-based line number in the source file, got {line!r}")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise ConfigError(f"{where}: note must be a string, got {note!r}")
    return Entry(key, raw["value"], sources[raw["source"]], line, note)


def load_model_records(path: Path) -> ModelRecords:
    """Parse and validate one records file (``ConfigError`` naming the file on any malformed part)."""
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or set(raw) != {"sources", "presets"}:
        raise ConfigError(f"{path} must have exactly two top-level keys, sources and presets")
    model = path.stem
    sources = {name: _source(path, name, s) for name, s in (raw["sources"] or {}).items()}
    presets: dict[str, dict[str, Entry]] = {}
    for preset, entries in (raw["presets"] or {}).items():
        if not str(preset).startswith(f"{model}-"):
            raise ConfigError(f"{path}: preset {preset!r} is not one of this model's (<{model}>-<task>)")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{path}: preset {preset!r} has no entries")
        presets[preset] = {key: _entry(path, preset, key, e, sources) for key, e in entries.items()}
    return ModelRecords(model, path, presets)


@lru_cache(maxsize=None)
def _load_all(records_dir: Path) -> dict[str, dict[str, Entry]]:
    out: dict[str, dict[str, Entry]] = {}
    for path in sorted(records_dir.glob("*.yaml")):
        out.update(load_model_records(path).presets)
    return out


def preset_records(preset: str, records_dir: Path = RECORDS_DIR) -> dict[str, Entry] | None:
    """The entries of ``preset`` (``<model>-<task>``), or None when no records file holds it."""
    return _load_all(records_dir).get(preset)


def record_files(records_dir: Path = RECORDS_DIR) -> dict[str, Path]:
    """model name -> its records file."""
    return {p.stem: p for p in sorted(records_dir.glob("*.yaml"))}
