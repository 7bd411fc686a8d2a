"""Test-only callbacks that inject real faults into a real training run."""

from __future__ import annotations

import os
import signal

import psutil
import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    """Sends a real signal to this process after optimizer step ``step`` (preemption)."""

    def __init__(self, step: int, name: str = "SIGTERM"):
        self.step, self.signum = step, getattr(signal, name)

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class KillWandbServiceAtStep(pl.Callback):
    """Kills the W&B service process (wandb-core) mid-run, as a crash of W&B would."""

    killed: list[int] = []  # class-level, so the test can check a kill really happened

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            for child in psutil.Process().children(recursive=True):
                if "wandb" in " ".join(child.cmdline()).lower():
                    child.kill()
                    KillWandbServiceAtStep.killed.append(child.pid)


class SlowDown(pl.Callback):
    """Sleeps after each training batch, so a test can kill the process part-way (results are unaffected)."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        import time

        time.sleep(self.seconds)


class KillAtStep(pl.Callback):
    """Kills this process with a real signal just before optimizer step ``step`` runs, once: the marker file
    records the kill, so the rerun of the same command (same overrides, same run folder) goes through."""

    def __init__(self, step: int, marker: str, name: str = "SIGKILL"):
        self.step, self.marker, self.signum = step, marker, getattr(signal, name)

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        from pathlib import Path

        if trainer.global_step == self.step and not Path(self.marker).exists():
            Path(self.marker).write_text(str(self.step))
            os.kill(os.getpid(), self.signum)


class FillDiskAtStep(pl.Callback):
    """Fills the filesystem of ``filler`` at optimizer step ``step`` (once: the filler file stays until the test
    removes it), so the next checkpoint or log write meets a real ENOSPC."""

    def __init__(self, step: int, filler: str):
        self.step, self.filler = step, filler

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        from pathlib import Path

        if trainer.global_step == self.step and not Path(self.filler + ".done").exists():
            Path(self.filler + ".done").write_text("1")
            try:
                with open(self.filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            except OSError:
                pass
