"""A few real training steps end to end: W&B offline and CSV read back, checkpoints, test on best."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lra_bench import train as train_mod
from lra_bench.config import PROJECT_ROOT
from tests.conftest import TINY_RUN, compose_config
from tests.wandb_records import read_run


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def wandb_run(listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run with the W&B + CSV loggers (W&B offline), shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(out), "WANDB_CONFIG_DIR": str(out / "cfg"),
                       "WANDB_CACHE_DIR": str(out / "cache")}.items():
        mp.setenv(key, value)
    mp.delenv("WANDB_API_KEY", raising=False)
    try:
        cfg = compose_config([*TINY_RUN, "logger=wandb", f"paths.data_dir={listops_root}", f"paths.output_dir={out}",
                              "logger.wandb.group=unit-tests", "optimizer.lr=3e-3"])
        result = train_mod.train(cfg)
    finally:
        mp.undo()
    return {"cfg": cfg, "result": result, "out": out}


def test_metrics_reach_the_csv_logger(wandb_run: dict) -> None:
    rows = read_csv(wandb_run["out"] / "csv" / "metrics.csv")
    assert len(column(rows, "train/loss")) >= 10  # 12 steps, logged every step
    assert len(column(rows, "val/acc")) == 2  # two epochs
    for key in ("train/tokens_per_sec", "train/samples_per_sec", "train/step_time", "train/peak_memory_mb"):
        values = column(rows, key)
        assert values and all(v > 0 for v in values), key
    lrs = column(rows, "train/lr")
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(3e-3)  # warmup from 0 to the peak, then decay
    assert column(rows, "model/params_total")[0] > 0


def test_the_wandb_offline_run_holds_config_history_and_summary(wandb_run: dict) -> None:
    (run_dir,) = (wandb_run["out"] / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["run"]["project"] == "lra_bench"
    assert run["run"]["group"] == "unit-tests"
    assert run["run"]["job_type"] == "listops"
    assert set(run["run"]["tags"]) == {"transformer", "listops"}
    assert run["config"]["task"]["name"] == "listops"
    assert run["config"]["optimizer"]["lr"] == pytest.approx(3e-3)
    history = run["history"]
    assert any("train/loss" in h for h in history)
    assert any("val/acc" in h for h in history)
    assert any("train/tokens_per_sec" in h for h in history)
    summary = run["summary"]
    result = wandb_run["result"]
    assert summary["test/acc"] == pytest.approx(result["test/acc"])
    assert summary["val/acc_best"] == pytest.approx(result["val/acc_best"])
    assert summary["perf/tokens_per_sec"] > 0 and summary["model/params_total"] > 0


def test_best_and_last_checkpoints_are_written_and_test_uses_best(wandb_run: dict, listops_root: Path) -> None:
    out, result, cfg = wandb_run["out"], wandb_run["result"], wandb_run["cfg"]
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(n.startswith("best-step") for n in ckpts)
    assert Path(result["best_checkpoint"]).name in ckpts

    # Re-evaluate the best checkpoint by hand: the logged test accuracy must be its accuracy.
    net = instantiate(cfg.model.net)
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    dm = instantiate(cfg.task.datamodule)
    dm.setup()
    correct = total = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            correct += int((net(batch.tokens, batch.lengths).argmax(-1) == batch.labels).sum())
            total += len(batch.labels)
    assert total == 40
    assert result["test/acc"] == pytest.approx(correct / total)
    best_val = max(column(read_csv(out / "csv" / "metrics.csv"), "val/acc"))
    assert result["val/acc_best"] == pytest.approx(best_val)


def test_result_json_is_written(wandb_run: dict) -> None:
    saved = json.loads((wandb_run["out"] / "result.json").read_text())
    assert saved["task"] == "listops" and saved["model"] == "transformer"
    assert saved["global_step"] == 12
    assert 0.0 <= saved["test/acc"] <= 1.0
    assert 0.0 < saved["data/val_majority_rate"] <= 1.0


def test_wandb_runs_do_not_leak_between_jobs(listops_root: Path, offline_wandb: Path) -> None:
    """Two jobs in one process get two W&B runs, and W&B is closed after each (P3, P4)."""
    import wandb

    ids = []
    for i in range(2):
        out = offline_wandb / f"job{i}"
        cfg = compose_config([*TINY_RUN, "logger=wandb", f"paths.data_dir={listops_root}", f"paths.output_dir={out}",
                              "trainer.max_epochs=1", "test=false"])
        train_mod.train(cfg)
        assert wandb.run is None
        (run_dir,) = (out / "wandb").glob("offline-run-*")
        ids.append(read_run(run_dir)["run"]["id"])
    assert ids[0] != ids[1]


def test_a_failing_job_still_closes_wandb(run_config, offline_wandb: Path) -> None:
    import wandb

    cfg = run_config("logger=wandb", f"paths.output_dir={offline_wandb / 'bad'}", "scheduler.decay=step")
    with pytest.raises(ValueError, match="scheduler.decay"):
        train_mod.train(cfg)
    assert wandb.run is None


def test_missing_data_exits_with_one_clear_message(tmp_path: Path) -> None:
    """The CLI prints one line naming the path and the command that fills it: no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "lra_bench.train", f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
         "logger=csv", "trainer=cpu"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
    )
    assert proc.returncode == 2
    assert "error: no listops-1000/" in proc.stderr
    assert "python -m data_prep.listops --out-dir" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_describe_and_data_check_end_with_one_json_line(listops_root: Path) -> None:
    from lra_bench.data_check import check
    from lra_bench.describe import describe

    cfg = compose_config(["experiment=lra/transformer-listops"], config_name="describe")
    info = describe(cfg)
    assert info["params_total"] > info["params_non_embedding"] > 8_000_000
    cfg = compose_config([f"paths.data_dir={listops_root}", "task.datamodule.num_workers=0"], config_name="data_check")
    report = check(cfg)
    assert report["task"] == "listops" and report["vocab_size"] == 17 and report["num_classes"] == 10
    assert {s: v["n"] for s, v in report["splits"].items()} == {"train": 96, "val": 40, "test": 40}
    assert sum(report["splits"]["val"]["label_counts"]) == 40
    assert 10 < report["splits"]["train"]["mean_len"] <= report["splits"]["train"]["max_len"] < 60
