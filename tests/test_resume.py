"""Exact resume: a run killed at any step of any epoch, rerun with the same command, ends as an uninterrupted run.

The reference (issue 16): quick ListOps, 3,000 rows, batch 64 (47 steps an epoch), a checkpoint every 20 steps,
100 steps. Each case kills a real training process with a real signal just before a given optimizer step
(``tests.helpers.KillAtStep``), reruns the same command, and compares ``result.json`` and every CSV row (timing
columns aside: they are wall-clock measurements) with the uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.listops import ListOpsSpec, generate
from lra_bench.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

TIMING = {"train/step_time", "train/samples_per_sec", "train/tokens_per_sec", "train/peak_memory_mb"}
COMMON = ["trainer=cpu", "logger=csv", "~callbacks.progress_bar", "task.batch_size=64", "task.max_length=64",
          "model.d_model=16", "model.net.head_hidden=16", "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2",
          "model.net.backbone.d_ff=32", "optimizer.lr=3e-3", "trainer.max_steps=100", "trainer.max_epochs=-1",
          "checkpoint_every_n_steps=20", "trainer.log_every_n_steps=1", "trainer.val_check_interval=1.0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume-data")
    generate(root / "listops-1000", {"train": 3000, "val": 200, "test": 200}, seed=0,
             spec=ListOpsSpec(max_depth=4, max_args=4, min_length=10, max_length=60), progress=False)
    return root


def train(data: Path, logs: Path, workers: int, kill: tuple[int, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lra_bench.train", *COMMON, f"paths.data_dir={data}", f"paths.log_dir={logs}",
           f"task.datamodule.num_workers={workers}"]
    if kill is not None:  # part of the command both times (same run folder); the marker makes it fire only once
        step, signal_name = kill
        cmd += ["+callbacks.kill._target_=tests.helpers.KillAtStep", f"+callbacks.kill.step={step}",
                f"+callbacks.kill.marker={logs}/killed", f"+callbacks.kill.name={signal_name}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600)


def run_folder(logs: Path) -> Path:
    (folder,) = (logs / "runs").glob("*/*")
    return folder


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING and v != ""} for r in csv.DictReader(f)]


def outcome(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    return {k: result[k] for k in ("val/acc_best", "test/acc", "test/loss", "global_step", "best_checkpoint")} | {
        "best_checkpoint": Path(result["best_checkpoint"]).name}


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict, list]]:
    """The reference run, with and without a worker process (the batches are the same either way)."""
    out = {}
    for workers in (0, 1):
        logs = tmp_path_factory.mktemp(f"reference-w{workers}")
        done = train(data, logs, workers)
        assert done.returncode == 0, done.stderr[-3000:]
        out[workers] = (outcome(run_folder(logs)), rows(run_folder(logs)))
    assert out[0] == out[1], "a worker process must not change the batches"
    return out


@pytest.mark.parametrize("step, signal_name, workers", [
    (30, "SIGKILL", 0),    # epoch 0, after the step-20 checkpoint
    (47, "SIGKILL", 0),    # just after the epoch-end last.ckpt (first step of epoch 1)
    (47, "SIGKILL", 1),    # the same with a worker prefetching
    (65, "SIGKILL", 1),    # epoch 1, after the step-60 checkpoint, with a worker
    (93, "SIGKILL", 0),    # epoch 1, last batches
    (65, "SIGTERM", 1),    # preemption: checkpoint before the next batch, stop at once
], ids=lambda v: str(v))
def test_a_killed_run_resumes_to_the_uninterrupted_result_and_csv(
    step: int, signal_name: str, workers: int, data: Path, tmp_path: Path, uninterrupted: dict,
) -> None:
    first = train(data, tmp_path, workers, kill=(step, signal_name))
    assert first.returncode == (-9 if signal_name == "SIGKILL" else 128 + 15), first.stderr[-3000:]
    folder = run_folder(tmp_path)
    assert not (folder / "result.json").exists()
    second = train(data, tmp_path, workers, kill=(step, signal_name))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr
    expected_outcome, expected_rows = uninterrupted[workers]
    assert outcome(folder) == expected_outcome
    got = rows(folder)
    assert len(got) == len(expected_rows)
    for i, (a, b) in enumerate(zip(got, expected_rows)):
        assert a == b, f"CSV row {i} differs: {a} vs {b}"
