"""Configs from outside the repository: append every entry of ``LRA_BENCH_CONFIG_PATH`` to Hydra's search path.

    export LRA_BENCH_CONFIG_PATH=pkg://my_models.conf            # a package holding conf/model/<name>.yaml
    export LRA_BENCH_CONFIG_PATH=/home/me/lra_conf:pkg://other.conf
    python -m lra_bench.train experiment=lra/mega-text model=<name>

Entries are separated by ``os.pathsep`` (``:`` on POSIX; the ``:`` of a ``pkg://`` or ``file://`` scheme is not a
separator). Each is ``pkg://<module>[.<sub>]`` (an importable package; Hydra needs an ``__init__.py`` in that
folder), ``file://<dir>`` or a plain directory (relative ones resolve against the directory the command starts
in). The entries come after lra_bench's own ``conf/``, so a built-in config of the same name wins: give yours
names of their own. Hydra's ``hydra.searchpath=[...]`` override adds folders too (for one command).

This is Hydra's plugin pattern (facebookresearch/hydra examples/plugins/example_searchpath_plugin): Hydra finds
the class by importing the ``hydra_plugins`` namespace package, so the module must stay cheap to import. The
variable is read each time a search path is built (every ``hydra.main`` start and every ``initialize_config_dir``),
so a test may set it with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import os
import re

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV_VAR = "LRA_BENCH_CONFIG_PATH"
PROVIDER = "LRA_BENCH_CONFIG_PATH"
SCHEMES = ("pkg://", "file://")


def split_entries(value: str, sep: str = os.pathsep) -> list[str]:
    """``value`` split at ``sep``, except where ``sep`` is the colon of a ``scheme://`` (POSIX: ``pkg://a:/b``)."""
    if sep == ":":
        parts = re.split(r":(?!//)", value)
    else:
        parts = value.split(sep)
    return [p.strip() for p in parts if p.strip()]


def as_search_path(entry: str) -> str:
    """``pkg://...`` and ``file://...`` as given; a plain directory as ``file://<absolute path>``."""
    if entry.startswith(SCHEMES):
        return entry
    return "file://" + os.path.abspath(os.path.expanduser(entry))


def configured_entries(environ: os._Environ | dict[str, str] = os.environ) -> list[str]:
    """The search-path entries ``LRA_BENCH_CONFIG_PATH`` asks for, normalised (empty when it is unset)."""
    return [as_search_path(e) for e in split_entries(environ.get(ENV_VAR, ""))]


class LRABenchSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for path in configured_entries():
            search_path.append(provider=PROVIDER, path=path)
