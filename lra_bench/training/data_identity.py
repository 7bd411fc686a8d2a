"""Which data a run folder was trained on, so a resume or a finished run's rerun never silently uses other data.

The identity is the data cache's folder name, ``<task>-<key>`` (lra_bench/data/cache.py): the key covers every
preprocessing option and the content of every source file, not its location. It is recorded in
``<run>/data_identity.json`` when the run starts. Resuming from a checkpoint, or rerunning a finished run, on data
with another identity (regenerated with another seed, edited, another ``paths.data_dir`` holding other data) stops
with one line naming both; ``rerun=true`` starts the run over on the new data, another run folder keeps both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lra_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RECORD = "data_identity.json"


def identity(datamodule: Any) -> str | None:
    """``<task>-<cache key>`` of a datamodule's splits (None for a datamodule without the cache)."""
    cache = getattr(datamodule, "cache", None)
    return cache.dir.name if cache is not None else None


def recorded(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def check(run_dir: Path, datamodule: Any, continuing: bool) -> None:
    """Refuse when the run folder's progress (``continuing``: a checkpoint resumed or a finished result) was made on
    other data; otherwise record this data's identity."""
    current = identity(datamodule)
    if current is None:
        return
    data_dir = str(getattr(datamodule, "data_dir", "?"))
    before = recorded(run_dir)
    if before is not None and before.get("data") != current and continuing:
        raise ConfigError(
            f"{run_dir} was trained on data {before.get('data')} (from {before.get('data_dir')}), but the data now is "
            f"{current} (from {data_dir}): regenerated, edited or another paths.data_dir. rerun=true starts this run "
            "over on the new data; or give the run another folder (paths.log_dir=... or another override)")
    if before is None or before.get("data") != current:
        text = json.dumps({"data": current, "data_dir": data_dir}, indent=2) + "\n"
        from lra_bench.training.checkpoint_io import atomic_write

        atomic_write(Path(run_dir) / RECORD, lambda f: f.write(text.encode()))


def check_finished(run_dir: Path, datamodule_cfg: Any) -> None:
    """Before a finished run's result is printed again: the data the command names now must be the data it was
    trained on. Data that cannot be found is not compared (the result stands for the data it recorded)."""
    if recorded(run_dir) is None:
        return
    from hydra.utils import instantiate

    try:
        datamodule = instantiate(datamodule_cfg)
        check(run_dir, datamodule, continuing=True)
    except DataError as e:
        log.warning("could not check the data of the finished run %s against this command's: %s", run_dir, e)
