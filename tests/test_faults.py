"""Reliability: finished runs are skipped, preempted runs resume exactly, NaNs stop or are skipped,
W&B failures never stop training, concurrent cache builds do not corrupt the cache."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import re
from pathlib import Path

import pytest

from lra_bench import train as train_mod
from lra_bench.data.listops import ListOpsDataModule
from lra_bench.errors import ConfigError
from lra_bench.training.faults import NonFiniteError
from lra_bench.training.optim import lr_factor
from lra_bench.training.run_state import checkpoint_step
from tests.conftest import TINY_RUN, compose_config

STEPS = ["trainer.max_epochs=2", "checkpoint_every_n_steps=2", "model.net.backbone.dropout=0.1", "trainer.deterministic=true"]


def config(listops_root: Path, out: Path, *extra: str):
    return compose_config([*TINY_RUN, f"paths.data_dir={listops_root}", f"paths.output_dir={out}", *STEPS, *extra])


def compare(a: dict, b: dict) -> None:
    for key in ("val/acc_best", "test/acc", "test/loss", "global_step"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key


def test_a_finished_run_is_skipped_and_rerun_starts_over(listops_root: Path, tmp_path: Path) -> None:
    first = train_mod.train(config(listops_root, tmp_path))
    again = train_mod.train(config(listops_root, tmp_path))
    assert again["skipped_rerun"] and again["test/acc"] == first["test/acc"]
    fresh = train_mod.train(config(listops_root, tmp_path, "rerun=true"))
    assert "skipped_rerun" not in fresh
    assert len(list(tmp_path.glob("previous-*/result.json"))) == 1
    compare(fresh, first)  # same seed, same result


@pytest.mark.parametrize("stop_at", [3, 6])  # mid-epoch (6 batches per epoch) and at an epoch boundary
def test_sigterm_saves_and_a_rerun_resumes_to_the_uninterrupted_result(listops_root: Path, tmp_path: Path, stop_at: int) -> None:
    reference = train_mod.train(config(listops_root, tmp_path / "reference"))
    out = tmp_path / "preempted"
    cfg = config(listops_root, out, "+callbacks.kill._target_=tests.helpers.SignalAtStep", f"+callbacks.kill.step={stop_at}")
    first = train_mod.train(cfg)
    assert first == {"preempted": 15}
    assert (out / "checkpoints" / "preempted.ckpt").is_file() and not (out / "result.json").exists()
    resumed = train_mod.train(config(listops_root, out))  # the same command again
    compare(resumed, reference)


def test_the_nan_advice_works_end_to_end_stop_lower_the_lr_resume_from_the_named_checkpoint(listops_root: Path, tmp_path: Path) -> None:
    """At lr=1e3 the weights blow up within a few steps. The checkpoint named must hold weights from before the step
    whose weights gave the non-finite value (a checkpoint of that step holds them: resuming from it failed again at
    once), and resuming from it at a lower lr must train to the end."""
    cfg = config(listops_root, tmp_path / "bad", "optimizer.lr=1e3", "checkpoint_every_n_steps=1")
    with pytest.raises(NonFiniteError) as failure:
        train_mod.train(cfg)
    found = re.search(r"non-finite (?:loss|gradient) at step (\d+) .*the last good checkpoint \(saved before step \1\) is "
                      r"(\S+): resume from it with a lower lr, ckpt_path=\2 optimizer.lr=<lower than 1000>", str(failure.value))
    assert found, str(failure.value)
    bad_step, named = int(found[1]), Path(found[2])
    assert 0 <= checkpoint_step(named) < bad_step
    assert json.loads((tmp_path / "bad" / "error.json").read_text())["error"].startswith("NonFiniteError: non-finite")
    resumed = train_mod.train(config(listops_root, tmp_path / "lower", f"ckpt_path={named}", "optimizer.lr=1e-3"))
    assert resumed["global_step"] == 12 and math.isfinite(resumed["test/loss"])


def lr_rows(folder: Path) -> dict[int, float]:
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}


def test_a_changed_lr_on_resume_takes_effect_from_the_resumed_step_on_the_same_schedule(listops_root: Path, tmp_path: Path,
                                                                                      caplog) -> None:
    """README: on NaN, lower optimizer.lr and resume. Lightning restores the checkpoint's optimizer and scheduler (their
    lr won); the command's lr must apply from the resumed step, the schedule's shape rescaled to it."""
    out = tmp_path / "run"
    killed = config(listops_root, out, "+callbacks.kill._target_=tests.helpers.SignalAtStep", "+callbacks.kill.step=4")
    assert train_mod.train(killed) == {"preempted": 15}
    with caplog.at_level("INFO"):
        train_mod.train(config(listops_root, out, "optimizer.lr=1e-5"))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resume settings:"))
    assert "(step 4); from the command, applied from step 4 (the lr schedule keeps its shape, rescaled to the new peak): " \
           "optimizer.lr 0.001 -> 1e-05" in line
    lrs = lr_rows(out)  # 12 steps, 1 warmup step, linear decay (conf/train.yaml)
    assert sorted(lrs) == list(range(12))
    for step, lr in lrs.items():
        assert lr == pytest.approx((1e-3 if step < 4 else 1e-5) * lr_factor(step, 12, 1, "linear"), rel=1e-6), step


def test_a_changed_model_size_on_resume_stops_with_one_line_naming_the_keys(listops_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    killed = config(listops_root, out, "+callbacks.kill._target_=tests.helpers.SignalAtStep", "+callbacks.kill.step=4")
    assert train_mod.train(killed) == {"preempted": 15}
    with pytest.raises(ConfigError, match=r"cannot resume .*preempted.ckpt with other model.d_model \(32 in the checkpoint, "
                                          r"64 now\).*: they define what its weights and data position mean"):
        train_mod.train(config(listops_root, out, "model.d_model=64"))
    with pytest.raises(ConfigError, match=r"task.batch_size \(16 in the checkpoint, 8 now\)"):
        train_mod.train(config(listops_root, out, "task.batch_size=8"))


def test_nonfinite_updates_can_be_skipped_and_counted(listops_root: Path, tmp_path: Path) -> None:
    cfg = config(listops_root, tmp_path, "optimizer.lr=1e30", "scheduler.warmup_fraction=0.0", "on_nonfinite=skip")
    result = train_mod.train(cfg)
    assert result["train/nonfinite_skipped"] >= 1 and result["global_step"] == 12


def test_a_single_nonfinite_gradient_with_a_finite_loss_is_caught(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import torch

    from lra_bench.training.faults import NonFiniteGuard

    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    module.last_loss = torch.tensor(0.5)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    module[0].bias.grad = None  # a parameter without a gradient is not a bad one
    trainer = SimpleNamespace(global_step=7, current_epoch=0, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=7)))
    guard = NonFiniteGuard(str(tmp_path / "checkpoints"))
    guard.on_before_optimizer_step(trainer, module, None)  # all finite: nothing happens
    module[1].weight.grad[0, 2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at step 7 .*no checkpoint was saved before step 7: start "
                                             r"over with a lower lr"):
        guard.on_before_optimizer_step(trainer, module, None)


def test_wandb_dying_mid_run_does_not_stop_training(listops_root: Path, tmp_path: Path, offline_wandb: Path, caplog) -> None:
    cfg = config(listops_root, tmp_path / "run", "logger=wandb", "+callbacks.kill_wandb._target_=tests.helpers.KillWandbServiceAtStep",
                 "+callbacks.kill_wandb.step=3")
    from tests.helpers import KillWandbServiceAtStep

    KillWandbServiceAtStep.killed.clear()
    with caplog.at_level("WARNING"):
        result = train_mod.train(cfg)
    assert KillWandbServiceAtStep.killed, "the W&B service process was found and killed"
    assert result["global_step"] == 12 and (tmp_path / "run" / "result.json").is_file()


def _prepare(args: tuple[str, str]) -> str:
    root, cache = args
    dm = ListOpsDataModule(data_dir=root, cache_dir=cache, batch_size=8)
    dm.prepare_data()
    dm.setup()
    return str(dm.cache.dir)


def test_two_processes_building_one_cache_do_not_corrupt_it(listops_root: Path, tmp_path: Path) -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        dirs = pool.map(_prepare, [(str(listops_root), str(tmp_path))] * 2)
    assert dirs[0] == dirs[1]
    dm = ListOpsDataModule(data_dir=str(listops_root), cache_dir=str(tmp_path), batch_size=8)
    assert dm.cache.is_complete()
    dm.setup()
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 96, "val": 40, "test": 40}
    assert not list(tmp_path.glob("*.tmp-*")), "no temporary folder is left behind"


def test_a_run_that_starts_over_logs_to_a_new_wandb_run(listops_root: Path, tmp_path: Path, offline_wandb: Path, caplog) -> None:
    """W&B refuses steps below those a run has seen: a killed attempt's W&B run could not take a restart's rows
    from step 0. The restart logs to a new W&B run and says so; the old one is left as it ended."""
    out = tmp_path / "run"
    train_mod.train(config(listops_root, out, "logger=wandb"))
    first_id = (out / "wandb_id.txt").read_text().strip()
    (out / "result.json").unlink()
    for ckpt in (out / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"")
    with caplog.at_level("INFO"):
        train_mod.train(config(listops_root, out, "logger=wandb"))
    second_id = (out / "wandb_id.txt").read_text().strip()
    assert second_id != first_id
    assert f"W&B: the killed attempt's run {first_id} is left as it ended; this attempt logs to a new run {second_id}" in caplog.text
    assert list((out / "wandb").glob(f"offline-run-*-{second_id}"))


def test_the_resume_rules_apply_optimizer_and_schedule_changes_refuse_model_and_data_changes_and_ignore_paths() -> None:
    from lra_bench.training.resume_rules import resume_rule_line

    saved = {"optimizer": {"lr": 2e-3}, "scheduler": {"decay": "cosine"}, "trainer": {"max_steps": 30, "accumulate_grad_batches": 1},
             "model": {"d_model": 32}, "task": {"batch_size": 8, "datamodule": {"num_workers": 1}}, "seed": 1,
             "paths": {"output_dir": "/a"}, "ckpt_path": None}
    same = resume_rule_line("c.ckpt", 20, saved, saved | {"paths": {"output_dir": "/b"}, "ckpt_path": "c.ckpt"})
    assert same.startswith("resume settings: the command matches c.ckpt's config")
    changed = saved | {"optimizer": {"lr": 1e-5}, "scheduler": {"decay": "linear"}, "trainer": {"max_steps": 60, "accumulate_grad_batches": 1},
                       "task": {"batch_size": 8, "datamodule": {"num_workers": 4}}}
    line = resume_rule_line("c.ckpt", 20, saved, changed)
    assert line.endswith("applied from step 20 (the lr schedule keeps its shape, rescaled to the new peak): optimizer.lr "
                         "0.002 -> 1e-05; scheduler.decay 'cosine' -> 'linear'; trainer.max_steps 30 -> 60")
    for key, refused in (("model.d_model", {"model": {"d_model": 64}}), ("seed", {"seed": 2}),
                         ("task.batch_size", {"task": {"batch_size": 16, "datamodule": {"num_workers": 1}}}),
                         ("trainer.accumulate_grad_batches", {"trainer": {"max_steps": 30, "accumulate_grad_batches": 2}})):
        with pytest.raises(ConfigError, match=rf"^cannot resume c.ckpt with other {key} \("):
            resume_rule_line("c.ckpt", 20, saved, saved | refused)
    assert "records no run config" in resume_rule_line("old.ckpt", 20, None, saved)
