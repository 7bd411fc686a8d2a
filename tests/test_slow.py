"""Slow checks (make test-slow; CI runs them): SIGKILL and resume in a real process, DDP on CPU, Optuna search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lra_bench import train as train_mod
from lra_bench.config import PROJECT_ROOT
from tests.conftest import TINY_RUN, compose_config

pytestmark = pytest.mark.slow

CLI = [*TINY_RUN, "logger=wandb", "trainer.max_epochs=6", "checkpoint_every_n_steps=3", "model.net.backbone.dropout=0.1"]


def cli(data: Path, logs: Path) -> list[str]:
    return [sys.executable, "-m", "lra_bench.train", f"paths.data_dir={data}", f"paths.log_dir={logs}", *CLI]


def run_dir(logs: Path) -> Path:
    (folder,) = (logs / "runs").glob("*/*")
    return folder


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(listops_root: Path, tmp_path: Path) -> None:
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb_home"), "WANDB_SILENT": "true"}
    reference = subprocess.run(cli(listops_root, tmp_path / "ref"), capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads((run_dir(tmp_path / "ref") / "result.json").read_text())

    logs = tmp_path / "killed"
    # killed by a real SIGKILL just before step 8 (after the step-6 checkpoint), deterministically: no timing windows
    kill = ["+callbacks.kill._target_=tests.helpers.KillAtStep", "+callbacks.kill.step=8", f"+callbacks.kill.marker={logs}/killed"]
    first = subprocess.run([*cli(listops_root, logs), *kill], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    folder = run_dir(logs)
    assert not (folder / "result.json").exists()

    again = subprocess.run([*cli(listops_root, logs), *kill], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout + again.stderr
    resumed = json.loads((folder / "result.json").read_text())
    for key in ("val/acc_best", "test/acc", "test/loss", "global_step"):
        assert resumed[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key
    # both attempts logged to one W&B run: the id kept in the run folder
    from tests.wandb_records import read_run

    run_id = (folder / "wandb_id.txt").read_text().strip()
    attempts = sorted((folder / "wandb").glob("offline-run-*"))  # offline-run-<time>-<run id>
    assert len(attempts) == 2 and {d.name.rsplit("-", 1)[1] for d in attempts} == {run_id}
    assert read_run(attempts[-1])["run"]["id"] == run_id
    rows = (folder / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) > 20  # the first attempt's rows are kept and the resumed run appends


def test_ddp_on_cpu_with_two_processes_matches_one_process(listops_root: Path, tmp_path: Path) -> None:
    """2 gloo processes with half the batch each = one process with the whole batch: the sampler shards one
    permutation by rank, so each step sees the same samples, and DDP averages the gradients. Tolerance: 1e-4
    relative on the test loss (float reductions in another order), equal accuracies. No dropout, no batch norm."""
    common = [*TINY_RUN, f"paths.data_dir={listops_root}", "model.net.backbone.dropout=0.0", "trainer.max_epochs=2"]
    single = train_mod.train(compose_config([*common, f"paths.output_dir={tmp_path / 'one'}", "task.batch_size=16"]))
    ddp = train_mod.train(compose_config([*common, f"paths.output_dir={tmp_path / 'ddp'}", "task.batch_size=8", "trainer=ddp",
                                          "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                                          "trainer.sync_batchnorm=false"]))
    from lra_bench.training.run_state import checkpoint_step

    # under ddp_spawn the training loop runs in the children; their best checkpoint holds the step count
    assert checkpoint_step(Path(ddp["best_checkpoint"])) == checkpoint_step(Path(single["best_checkpoint"]))
    assert single["global_step"] == 12
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-4)
    assert ddp["val/acc_best"] == pytest.approx(single["val/acc_best"], abs=1e-6)
    assert ddp["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)


def test_optuna_search_returns_the_best_trial(listops_root: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lra_bench.train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
           "hydra.sweeper.sampler.n_startup_trials=2", f"paths.data_dir={listops_root}", f"paths.log_dir={tmp_path}",
           *TINY_RUN, "trainer.max_epochs=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "multiruns").glob("*/optimization_results.yaml")
    found = yaml.safe_load(results.read_text())
    assert set(found["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.net.backbone.dropout"}
    assert 0.0 <= found["best_value"] <= 1.0
