"""The vocabulary a model's options are declared in: what a value may be (``Int(1)``, ``Float(0, 1, hi_open=True)``,
``Choice(...)``, ``Nullable(...)``) and rules between keys (``Relation``), gathered in a ``Schema``.

One declaration gives the start-up check (``Schema.problems``: one line per bad value, naming the key, the value and
the valid range) and the README's option table (``Rule.text``). Keys are dotted paths under ``model.``, as in the
model's config file (``net.backbone.n_layers`` is ``model.net.backbone.n_layers``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

NOT_SET = object()  # a key absent from the composed config


def _num(v: float) -> str:
    """2.0 -> 2, 0.001 -> 0.001, inf -> inf: the bound as a user writes it."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


class Rule:
    """What one value may be. ``text`` reads after "must be" (the error) and alone (the README table)."""

    text: str

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Rule):
    """An integer in [lo, hi] (either end open-ended when None), a multiple of ``step``."""

    lo: int | None = None
    hi: int | None = None
    step: int = 1

    @property
    def text(self) -> str:
        kind = "an even integer" if self.step == 2 else "an integer" if self.step == 1 else f"a multiple of {self.step}"
        if self.lo is not None and self.hi is not None:
            return f"{kind} in {self.lo} .. {self.hi}"
        if self.lo is not None:
            return f"{kind} >= {self.lo}"
        return f"{kind} <= {self.hi}" if self.hi is not None else kind

    def accepts(self, value: Any) -> bool:
        return (is_int(value) and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
                and value % self.step == 0)


@dataclass(frozen=True)
class Float(Rule):
    """A finite number in the interval lo .. hi; ``lo_open``/``hi_open`` exclude that end (None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    @property
    def text(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"a number in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"a number {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"a number {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return "a finite number"

    def accepts(self, value: Any) -> bool:
        if not is_number(value):
            return False
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below


@dataclass(frozen=True)
class Choice(Rule):
    """One of a fixed set of values (strings, or true/false)."""

    values: tuple[Any, ...]

    def __init__(self, *values: Any):
        object.__setattr__(self, "values", tuple(values))

    @property
    def text(self) -> str:
        shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in self.values]
        return "one of " + ", ".join(shown) if len(shown) > 2 else " or ".join(shown)

    def accepts(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


BOOL = Choice(True, False)


@dataclass(frozen=True)
class Nullable(Rule):
    """null (which means ``meaning``) or a value of ``rule``."""

    rule: Rule
    meaning: str

    @property
    def text(self) -> str:
        return f"null ({self.meaning}) or {self.rule.text}"

    def accepts(self, value: Any) -> bool:
        return value is None or self.rule.accepts(value)


@dataclass(frozen=True)
class Either(Rule):
    """A value of any of ``rules`` (a number or a list of numbers, ...)."""

    rules: tuple[Rule, ...]

    def __init__(self, *rules: Rule):
        object.__setattr__(self, "rules", tuple(rules))

    @property
    def text(self) -> str:
        return " or ".join(r.text for r in self.rules)

    def accepts(self, value: Any) -> bool:
        return any(r.accepts(value) for r in self.rules)


@dataclass(frozen=True)
class ListOf(Rule):
    """A list whose every item is a value of ``item``."""

    item: Rule

    @property
    def text(self) -> str:
        item = self.item.text
        for one, many in (("an integer", "integers"), ("a number", "numbers")):
            item = item.replace(one, many, 1)
        return f"a list of {item}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(self.item.accepts(v) for v in value)


@dataclass(frozen=True)
class MappingOf(Rule):
    """A mapping with exactly the keys ``keys``, each value of ``item``."""

    keys: tuple[str, ...]
    item: Rule

    @property
    def text(self) -> str:
        return f"a mapping {{{', '.join(self.keys)}}} of {self.item.text}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict) and set(value) == set(self.keys) and all(self.item.accepts(v) for v in value.values())


@dataclass(frozen=True)
class Instantiable(Rule):
    """A Hydra config with ``_target_`` (a user's own class, built by Hydra); its keys are its constructor's to judge."""

    what: str

    @property
    def text(self) -> str:
        return f"a config with _target_ ({self.what})"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict) and "_target_" in value


@dataclass(frozen=True)
class Option:
    """One key of a model's config: what its value may be, and what it does (the README table's last column)."""

    key: str
    rule: Rule
    meaning: str


class Values:
    """A model config as a relation sees it: ``v["net.backbone.n_heads"]`` (under ``model.``, resolved; None when
    absent) and ``v.length``, the longest sequence the backbone gets (``task.max_length``, plus one with a CLS
    token)."""

    def __init__(self, model: dict, task_length: Any):
        self.model = model
        self.cls = self["net.pooling"] == "cls"
        self.length = task_length + int(self.cls) if is_int(task_length) else None

    def __getitem__(self, key: str) -> Any:
        value = lookup(self.model, key)
        return None if value is NOT_SET else value


def lookup(tree: Any, key: str) -> Any:
    """``tree["a"]["b"]`` for key ``a.b`` in nested dicts, NOT_SET when absent."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return NOT_SET
        tree = tree[part]
    return tree


@dataclass(frozen=True)
class Relation:
    """A rule over several keys (heads divide the width, a table fits the task's length). ``key`` is the key the
    message names; ``holds(v)`` says whether the rule holds (it is only asked once every key in ``uses`` has a
    valid value); ``rule(v)`` is the valid range, as a message after the key and its value."""

    key: str
    holds: Callable[[Values], bool]
    rule: Callable[[Values], str]
    text: str  # the rule in the README table, without values
    uses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """The options of one model: ``options`` (every key of its config file, each with its rule) and ``relations``
    between them. ``ignored`` keys are not options (``_target_``, ``name``)."""

    model: str
    options: tuple[Option, ...]
    relations: tuple[Relation, ...] = ()
    ignored: tuple[str, ...] = field(default=("name", "options_schema"))

    def option(self, key: str) -> Option | None:
        return next((o for o in self.options if o.key == key), None)

    def problems(self, cfg: DictConfig) -> list[str]:
        """One line per bad value of ``cfg`` (the composed training config): an unknown key, a value out of its
        range, a relation that does not hold. Interpolated values (``${model.d_model}``) are checked where they come
        from; overriding one on the command line makes it the user's value, checked here."""
        if cfg.get("model") is None:
            return []
        try:
            resolved = OmegaConf.to_container(cfg.model, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that does not resolve: building the model names it
            return []
        return self.problems_in(OmegaConf.to_container(cfg.model, resolve=False), resolved,
                                OmegaConf.select(cfg, "task.max_length", default=None))

    def problems_in(self, raw: dict, resolved: dict, task_length: Any) -> list[str]:
        """``problems`` on the model config as written (``raw``, interpolations as ``${...}`` strings) and resolved."""
        values = Values(resolved, task_length)
        lines = [self._unknown(path, lookup(resolved, path)) for path in self._unknown_keys(raw)]
        bad: set[str] = set()
        for option in self.options:
            written = lookup(raw, option.key)
            if written is NOT_SET or (isinstance(written, str) and "${" in written):
                continue
            value = values[option.key]
            if not option.rule.accepts(value):
                bad.add(option.key)
                lines.append(f"model.{option.key}={_show(value)}: must be {option.rule.text}")
        for relation in self.relations:
            uses = (relation.key, *relation.uses)
            if any(k in bad for k in uses) or not all(self._valid(values, k) for k in uses):
                continue
            if not relation.holds(values):
                lines.append(f"model.{relation.key}={_show(values[relation.key])}: {relation.rule(values)}")
        return lines

    def _valid(self, values: Values, key: str) -> bool:
        option = self.option(key)
        return option is None or option.rule.accepts(values[key])

    def _unknown_keys(self, raw: dict) -> list[str]:
        declared = {o.key for o in self.options}
        found: list[str] = []

        def walk(node: dict, prefix: str) -> None:
            for key, child in node.items():
                path = f"{prefix}{key}"
                if (str(key).startswith("_") and str(key).endswith("_")) or path in self.ignored or path in declared:
                    continue
                if isinstance(child, dict) and any(d.startswith(path + ".") for d in declared):
                    walk(child, path + ".")
                else:
                    found.append(path)

        walk(raw, "")
        return found

    def _unknown(self, path: str, value: Any) -> str:
        close = difflib.get_close_matches(path, [o.key for o in self.options], n=1, cutoff=0.75)
        hint = f"; did you mean model.{close[0]}?" if close else " (its options: the tables in README section 3)"
        return f"model.{path}={_show(value)}: not an option of model {self.model}{hint}"


def _show(value: Any) -> str:
    """A value as the user typed it: strings quoted, true/false/null lower-case."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def relation(key: str, holds: Callable[[Values], bool], rule: str | Callable[[Values], str], text: str,
             uses: Sequence[str] = ()) -> Relation:
    """A Relation; ``rule`` as a fixed string or built from the values."""
    return Relation(key, holds, rule if callable(rule) else (lambda v, r=rule: r), text, tuple(uses))


# --- relations used by many models


def divides(key: str, width: Callable[[Values], int], width_text: str, uses: Sequence[str] = ()) -> Relation:
    """``key`` divides ``width(v)`` (heads of equal size)."""
    return relation(key, lambda v: width(v) % v[key] == 0, lambda v: f"must divide {width_text} = {width(v)}",
                    f"divides {width_text}", uses)


def at_least_length(key: str, what: str) -> Relation:
    """``key`` (a position table, a fixed projection) covers the longest sequence of the task."""
    return relation(key, lambda v: v.length is None or v[key] >= v.length,
                    lambda v: f"{what} is shorter than the task's sequences ({_length_text(v)}); must be >= {v.length} "
                              f"(or lower task.max_length)",
                    ">= the task's length (task.max_length, + 1 with pooling=cls)")


def at_most_length(key: str, what: str) -> Relation:
    """``key`` (a block of positions) fits inside the task's longest sequence."""
    return relation(key, lambda v: v.length is None or v[key] <= v.length,
                    lambda v: f"{what} does not fit the task's sequences ({_length_text(v)}); must be <= {v.length}",
                    "<= the task's length")


def not_above(key: str, other: str) -> Relation:
    """``key`` <= ``other`` (the two ends of a range)."""
    return relation(key, lambda v: v[key] <= v[other], lambda v: f"must be <= model.{other} = {_show(v[other])}",
                    f"<= {other.rsplit('.', 1)[-1]}", (other,))


def _length_text(v: Values) -> str:
    return f"task.max_length={v.length - int(v.cls)}" + (" + 1 CLS token" if v.cls else "")
