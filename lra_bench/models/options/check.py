"""Check a composed config's model options against the model's schema, before anything is built.

Which schema: ``model.options_schema`` (``"package.module:NAME"``, a ``Schema`` in a user's own package) when the
model config sets it, else the built-in model's (``builtin.SCHEMAS[model.name]``). A model with neither is not
checked: its constructor is the only judge of its options.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import ConfigError
from lra_bench.models.options.rules import Schema


def schema_of(cfg: DictConfig) -> Schema | None:
    """The schema of ``cfg.model`` (see the module docstring), or None."""
    from lra_bench.models.options.builtin import SCHEMAS

    path = OmegaConf.select(cfg, "model.options_schema", default=None)
    if path is None:
        return SCHEMAS.get(str(OmegaConf.select(cfg, "model.name", default=None)))
    module, _, attr = str(path).partition(":")
    try:
        schema = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"model.options_schema={path!r}: cannot load it ({e}); give 'package.module:NAME' of a "
                          "lra_bench.models.options.rules.Schema, or remove the key (the options are then not checked)")
    if not isinstance(schema, Schema):
        raise ConfigError(f"model.options_schema={path!r}: is a {type(schema).__name__}, not a "
                          "lra_bench.models.options.rules.Schema")
    return schema


def model_option_problems(cfg: DictConfig) -> list[str]:
    """Every bad model option of ``cfg``, one line each (empty: all valid, or no schema)."""
    schema = schema_of(cfg)
    return [] if schema is None else schema.problems(cfg)


def check_model_options(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad model option (its key, its value and the valid range)."""
    problems = model_option_problems(cfg)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
