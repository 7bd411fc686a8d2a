"""A Hydra callback that checks the log folder is writable before Hydra creates the run folder in it.

Hydra makes the run (or sweep) folder before any job code runs, so a read-only or full ``paths.log_dir`` would end
in Hydra's traceback. This check runs first (``on_run_start`` / ``on_multirun_start``) and stops with one line.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def unwritable_reason(folder: Path) -> str | None:
    """None when files can be created in ``folder`` (made if missing), else the system's reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return None


class LogFolderCheck(Callback):
    def _check(self, config: DictConfig) -> None:
        log_dir = OmegaConf.select(config, "paths.log_dir")
        if not log_dir:
            return
        reason = unwritable_reason(Path(log_dir))
        if reason:
            print(f"error: cannot write the log folder {log_dir}: {reason}; set paths.log_dir=<a writable folder> "
                  "(or free space / fix its permissions)", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)
