"""Loggers: W&B that falls back to offline on its own, and the CSV logger that is always there.

W&B mode ``auto`` (the default) goes online only with credentials (``WANDB_API_KEY`` or a netrc
entry for the W&B host) and a reachable server; otherwise it runs offline and says so once.
An explicit ``WANDB_MODE`` in the environment wins. The mode is passed to ``wandb.init`` directly,
never through ``WandbLogger(offline=True)``, which leaks ``WANDB_MODE=dryrun`` into later jobs.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

import csv

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv and, in a new process, rewrites it with only the
    keys it has seen (then fails on the older rows). This one appends: a resumed run, or the test stage run
    in its own DDP-spawned processes, keeps the earlier rows; the header grows to the union of all keys."""

    def _check_log_dir_exists(self) -> None:  # keep earlier rows instead of deleting them
        pass

    def _existing_header(self) -> list[str]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            return next(csv.reader(f), [])

    def _record_new_keys(self) -> set[str]:
        if not self.metrics_keys:
            self.metrics_keys = sorted(self._existing_header())
        return super()._record_new_keys()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
        self.metrics_keys = sorted(set(fieldnames) | set(header))
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` with the appending writer above."""

    @property
    @rank_zero_only
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def _has_credentials(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str = "auto") -> tuple[str, str | None]:
    """Return (mode for wandb.init, a note to print or None)."""
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode must be one of {MODES}, got {mode!r}")
    env = os.environ.get("WANDB_MODE")
    if env:
        return ("offline" if env == "dryrun" else env), None
    if mode != "auto":
        return mode, None
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    if not _has_credentials(host):
        return "offline", f"W&B: no credentials for {host}; logging offline (sync later with `wandb sync <run dir>`)"
    if not _reachable(host, url.port or 443):
        return "offline", f"W&B: {host} is unreachable; logging offline (sync later with `wandb sync <run dir>`)"
    return "online", None


class SafeWandbLogger(WandbLogger):
    """A WandbLogger whose failures never reach training: the first error is logged once and W&B logging
    stops for the rest of the run (the CSV logger and result.json keep everything)."""

    broken: str | None = None

    def _guard(self, what: str, fn, *args, **kwargs):
        if self.broken is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # any failure of W&B's client or service
            self.broken = f"{type(e).__name__}: {e}"
            log.warning("W&B %s failed (%s); W&B logging is off for the rest of this run, training goes on", what, self.broken)
            return None

    def log_metrics(self, metrics, step=None):
        return self._guard("logging", super().log_metrics, metrics, step)

    def log_hyperparams(self, params, *args, **kwargs):
        return self._guard("config logging", super().log_hyperparams, params, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback):
        return self._guard("checkpoint hook", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status):
        return self._guard("finalize", super().finalize, status)

    def start_new_run(self, run_id: str) -> None:
        """Log to a new W&B run (``run_id``) instead of the one configured; only before anything was logged."""
        assert self._experiment is None, "the W&B run has already started"
        self._id = self._wandb_init["id"] = run_id


def wandb_logger(
    project: str,
    save_dir: str,
    mode: str = "auto",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    entity: str | None = None,
    id: str | None = None,
    **init_kwargs: Any,
):
    """A ``WandbLogger`` (failure-safe) in the resolved mode; the note about offline mode is logged once here."""
    resolved, note = resolve_wandb_mode(mode)
    if note:
        log.warning(note)
    os.makedirs(save_dir, exist_ok=True)
    logger = SafeWandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        job_type=job_type,
        tags=list(tags or []),
        entity=entity,
        id=id,
        mode=resolved,
        settings={"silent": True, "console": "off"},
        **init_kwargs,
    )
    logger._wandb_init.pop("anonymous", None)  # wandb >= 0.19 warns that it has no effect (P15)
    return logger


def reset_wandb_service() -> None:
    """Forget a dead W&B service: without this every later run in the process would connect to it again
    (its address stays in WANDB_SERVICE) and lose its logging."""
    import wandb

    try:
        wandb.teardown()
    except Exception:  # tearing down a dead connection fails; what matters is what follows
        pass
    os.environ.pop("WANDB_SERVICE", None)
    if getattr(wandb, "run", None) is not None:
        wandb.run = None


def finish_wandb(exit_code: int = 0) -> None:
    """Close the current W&B run, if any, so the next job in this process starts its own run."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except Exception as e:  # a logging failure must never take the run down with it
            log.warning("W&B finish failed: %s; the next run in this process will start a new W&B service", e)
            reset_wandb_service()
