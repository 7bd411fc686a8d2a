"""What every run measures besides accuracy: speed, peak memory and parameter counts.

``SpeedMonitor`` logs, averaged over each logging window of training steps:
- ``train/step_time`` (s): forward + backward + optimizer of one batch, data loading excluded;
- ``train/samples_per_sec`` and ``train/tokens_per_sec`` (non-pad tokens, from the batch lengths);
- ``train/peak_memory_mb``: the CUDA allocator peak on GPU, the process peak RSS on CPU.
It also keeps run-level figures (median step time, mean tokens/s, peak memory) for the summary.

``ParameterCount`` logs ``model/params_total`` and ``model/params_non_embedding`` at fit start.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

from lra_bench.benchmarks.process_memory import peak_rss_mb


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def count_tokens(batch: Any) -> int:
    """Non-pad tokens of a Batch or PairBatch (both documents count)."""
    n = int(batch.lengths.sum())
    if hasattr(batch, "lengths2"):
        n += int(batch.lengths2.sum())
    return n


def count_parameters(net: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in net.parameters())
    names = set(net.embedding_parameter_names()) if hasattr(net, "embedding_parameter_names") else set()
    embedding = sum(p.numel() for n, p in net.named_parameters() if n in names)
    return {"params_total": total, "params_non_embedding": total - embedding}


class SpeedMonitor(pl.Callback):
    """Times training steps and tracks peak memory; see the module docstring for the metric names."""

    def __init__(self, warmup_steps: int = 2):
        self.warmup_steps = warmup_steps  # first steps (allocation, autotuning) are left out of run figures
        self._t0 = 0.0
        self._steps_seen = 0
        self._window: list[tuple[float, int, int]] = []
        self.step_times: list[float] = []
        self.samples = 0
        self.tokens = 0
        self.timed_seconds = 0.0
        self.peak_mb = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._sync(pl_module)
        dt = time.perf_counter() - self._t0
        samples, tokens = int(batch[-1].numel()), count_tokens(batch)
        self._window.append((dt, samples, tokens))
        self._steps_seen += 1
        if self._steps_seen == self.warmup_steps + 1:  # the first timed step: drop the warm-up figures
            self.step_times, self.samples, self.tokens, self.timed_seconds = [], 0, 0, 0.0
        self.step_times.append(dt)
        self.samples += samples
        self.tokens += tokens
        self.timed_seconds += dt
        self.peak_mb = max(self.peak_mb, peak_memory_mb(pl_module.device))
        if len(self._window) >= max(1, trainer.log_every_n_steps) or trainer.is_last_batch:
            seconds = sum(w[0] for w in self._window)
            metrics = {
                "train/step_time": seconds / len(self._window),
                "train/samples_per_sec": sum(w[1] for w in self._window) / seconds,
                "train/tokens_per_sec": sum(w[2] for w in self._window) / seconds,
                "train/peak_memory_mb": self.peak_mb,
            }
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
            self._window = []

    def summary(self) -> dict[str, float]:
        """Run-level figures over the timed steps (all steps if there were too few to skip any)."""
        if not self.step_times:
            return {"step_time": float("nan"), "samples_per_sec": float("nan"), "tokens_per_sec": float("nan"), "peak_memory_mb": self.peak_mb}
        return {
            "step_time": statistics.median(self.step_times),
            "samples_per_sec": self.samples / self.timed_seconds,
            "tokens_per_sec": self.tokens / self.timed_seconds,
            "peak_memory_mb": self.peak_mb,
        }


class ParameterCount(pl.Callback):
    """Logs the parameter counts once, as hyper-parameters and metrics."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:  # a resumed run: the first attempt logged them at step 0
            return
        counts = count_parameters(pl_module.net)
        for logger in trainer.loggers:
            logger.log_metrics({f"model/{k}": float(v) for k, v in counts.items()}, step=0)
