"""A model from outside the repository: the example package (examples/lra_example, installed by `make install`) is
found through LRA_BENCH_CONFIG_PATH, passes check_model, trains as a sweep from another model's preset on the
command line, appears in the report built from those runs, and is benchmarked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from lra_bench.check_model import run_checks
from lra_bench.checks import FAIL
from lra_bench.checks.build import Target
from lra_bench.config import PROJECT_ROOT, available
from lra_bench.training.optim import build_param_groups

EXAMPLE = "pkg://lra_example.conf"
ENV = "LRA_BENCH_CONFIG_PATH"


def test_the_example_package_is_installed_and_its_model_is_found_through_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    dist = metadata.distribution("lra-example")  # `make install` installs it (editable)
    assert dist.version == "0.1.0"
    monkeypatch.delenv(ENV, raising=False)
    assert "gated_conv" not in available("model")
    monkeypatch.setenv(ENV, EXAMPLE)
    assert "gated_conv" in available("model")


def test_the_example_backbone_puts_its_kernels_in_their_own_optimizer_group_when_asked() -> None:
    from lra_example.gated_conv import GatedConvEncoder

    groups = build_param_groups(GatedConvEncoder(8, n_layers=2, conv_lr=1e-4), lr=1e-3, weight_decay=0.01)
    special = [g for g in groups if g["lr"] == 1e-4]
    assert len(special) == 1 and special[0]["weight_decay"] == 0.0 and len(special[0]["params"]) == 2  # one kernel a layer
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        GatedConvEncoder(8, kernel_size=4)


def test_the_example_model_passes_check_model_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, EXAMPLE)
    results = run_checks(Target(model="gated_conv", quick=True))
    assert not [r for r in results if r.status == FAIL], [r for r in results if r.status == FAIL]
    names = [r.name.split(":")[0] for r in results]
    assert len(results) == 19 and names.count("device") == 2  # 16 + the cost check's operations row + the device rows


def test_the_example_trains_as_a_sweep_from_the_mega_preset_and_appears_in_the_report(
        listops_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's command, from a folder outside the repository: python -m lra_bench.train -m experiment=lra/mega-listops
    model=gated_conv seed=1,2 (shrunk to a few steps); then python -m lra_bench.report over its logs."""
    logs = tmp_path / "logs"
    env = {**os.environ, ENV: EXAMPLE, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "lra_bench.train", "-m", "experiment=lra/mega-listops", "model=gated_conv", "seed=1,2",
           "sweep_name=own_model", f"paths.data_dir={listops_root}", f"paths.log_dir={logs}", "trainer=cpu", "trainer.devices=1",
           "logger=csv", "~callbacks.progress_bar", "task.datamodule.num_workers=0", "task.batch_size=8", "task.max_length=64",
           "model.d_model=16", "model.net.head_hidden=16", "model.net.backbone.n_layers=1", "trainer.max_steps=2",
           "trainer.max_epochs=1", "trainer.accumulate_grad_batches=1", "trainer.val_check_interval=1.0",
           "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "is mega's preset; for model gated_conv: its own backbone config instead of the preset's n_layers" in proc.stdout + proc.stderr
    results = [json.loads(p.read_text()) for p in sorted(logs.rglob("result.json"))]
    assert sorted((r["model"], r["task"], r["seed"], r["global_step"]) for r in results) == [("gated_conv", "listops", 1, 2),
                                                                                            ("gated_conv", "listops", 2, 2)]
    assert results[0]["experiment"] == "lra/mega-listops"

    from lra_bench.reporting.report import main as report_main

    assert report_main(["--runs", str(logs), "--bench", str(tmp_path / "no_bench"), "--out", str(tmp_path / "report")]) == 0
    assert "| **gated_conv** |" in capsys.readouterr().out  # a row of the LRA table, named from result.json
    assert "| gated_conv | listops | 2 |" in (tmp_path / "report" / "report.md").read_text()  # and one per run


def test_the_example_is_not_needed_by_the_built_in_configs() -> None:
    """The repository's own configs never name the example: it stays a user's package (nothing to change here)."""
    for path in (PROJECT_ROOT / "conf").rglob("*.yaml"):
        assert "lra_example" not in path.read_text(), path


def test_the_example_is_benchmarked_from_the_env_variable_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """python -m lra_bench.bench models=[gated_conv,...] with only LRA_BENCH_CONFIG_PATH set: it has no preset for the
    bench task, so it is built from task=<task> model=gated_conv, timed, and the output says how it was built."""
    from lra_bench.benchmarks import bench
    from tests.test_bench import bench_config

    monkeypatch.setenv(ENV, EXAMPLE)
    result = bench.run(bench_config(tmp_path, "models=[gated_conv]", "lengths=[64]", "flops=false", "inference=false"))
    (row,) = result["rows"]
    assert "skipped" not in row and row["tokens_per_s"] > 0 and row["params_mb"] > 0, row
    assert any(n.startswith("gated_conv: no preset lra/gated_conv-") for n in result["meta"]["notes"])
    assert "| gated_conv |" in (tmp_path / "results.md").read_text()
