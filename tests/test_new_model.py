"""``python -m lra_bench.new_model NAME``: the scaffold writes an installable package whose backbone follows the
protocol, refuses names it cannot take, and (slow) its model goes through check-model, a 2-seed sweep, bench, report
and the dashboard's dry run, found only through PYTHONPATH and LRA_BENCH_CONFIG_PATH=pkg://NAME.conf (the shared
environment is never installed into by a test; `pip install -e DIR` puts the same folder on the path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lra_bench.config import PROJECT_ROOT
from lra_bench.new_model import main

NAME = "bi_hyena_test"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("own") / NAME
    proc = subprocess.run([sys.executable, "-m", "lra_bench.new_model", NAME, "--out", str(out)], cwd=out.parent,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_scaffold_writes_a_package_with_its_config_as_package_data_and_prints_the_next_commands(
        package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file())
    assert files == sorted(["README.md", "pyproject.toml", f"{NAME}/__init__.py", f"{NAME}/backbone.py",
                            f"{NAME}/conf/__init__.py",
                            f"{NAME}/conf/model/{NAME}.yaml", f"tests/test_{NAME}.py"])
    project = tomllib.loads((package / "pyproject.toml").read_text())
    assert project["project"]["name"] == NAME and project["tool"]["setuptools"]["package-data"][NAME] == ["conf/**/*.yaml"]
    model = (package / NAME / "conf" / "model" / f"{NAME}.yaml").read_text()
    assert f"name: {NAME}\n" in model and f"_target_: {NAME}.backbone.BiHyenaTestBackbone" in model
    assert main([f"{NAME}_two", "--out", str(package.parent / "two")]) == 0
    out = capsys.readouterr().out
    for command in (f"pip install -e {package.parent / 'two'}", f"export LRA_BENCH_CONFIG_PATH=pkg://{NAME}_two.conf",
                    f"make check-model MODEL={NAME}_two", f"-m experiment=lra/mega-listops model={NAME}_two seed=1,2",
                    f"make bench ARGS=\"models=[{NAME}_two,transformer]\"", "make report"):
        assert command in out, command


@pytest.mark.parametrize("name, message", [("Bad-Name", "lower-case Python identifier"), ("mega", "is a built-in model"),
                                           ("torch", "already an importable module"), ("class", "lower-case Python identifier")])
def test_a_name_it_cannot_take_is_refused_with_one_line(name: str, message: str, tmp_path: Path, capsys) -> None:
    assert main([name, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_not_empty_is_never_written_into(package: Path, capsys) -> None:
    assert main([f"{NAME}_three", "--out", str(package)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_the_scaffold_backbone_follows_the_protocol(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lra_bench.checks.padding import backbone_padding
    from lra_bench.models.protocol import protocol_problem

    monkeypatch.syspath_prepend(str(package))
    module = __import__(f"{NAME}.backbone", fromlist=["BiHyenaTestBackbone"])
    backbone = module.BiHyenaTestBackbone(16, n_layers=2).eval()
    assert protocol_problem(backbone) is None
    torch.manual_seed(0)
    y = backbone(torch.randn(3, 10, 16), torch.tensor([10, 4, 1]))
    assert y.shape == (3, 10, 16) and y[1, 4:].abs().max() == 0 and y[2, 1:].abs().max() == 0
    assert all(r.status == "pass" for r in backbone_padding(backbone, 16))


@pytest.mark.slow
def test_a_scaffolded_model_goes_through_check_sweep_bench_report_and_dashboard(
        package: Path, listops_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """What README section 4 tells a researcher, at tiny sizes: the package's own test (check_model quick), a
    2-seed sweep from the command line, the bench, the report and the dashboard spec."""
    searchpath = f"pkg://{NAME}.conf"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(PROJECT_ROOT)]), "LRA_BENCH_CONFIG_PATH": searchpath,
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    checked = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                              str(package / "tests")], cwd=package, env=env, capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout[-3000:]

    logs = tmp_path / "logs"
    sweep = subprocess.run(
        [sys.executable, "-m", "lra_bench.train", "-m", "experiment=quick", f"model={NAME}", "seed=1,2", "sweep_name=own",
         f"paths.data_dir={listops_root}", "task.datamodule.dirname=listops-1000", f"paths.log_dir={logs}", "logger=csv",
         "~callbacks.progress_bar", "task.datamodule.num_workers=0", "task.batch_size=8", "task.max_length=64",
         "model.d_model=16", "model.net.head_hidden=16", "trainer.max_steps=3", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, (sweep.stdout + sweep.stderr)[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(logs.rglob("result.json"))]
    assert sorted((r["model"], r["seed"], r["global_step"]) for r in results) == [(NAME, 1, 3), (NAME, 2, 3)]

    monkeypatch.setenv("LRA_BENCH_CONFIG_PATH", searchpath)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # the bench's cells are fresh processes
    monkeypatch.syspath_prepend(str(package))
    from lra_bench.benchmarks import bench
    from tests.test_bench import bench_config

    bench_out = tmp_path / "bench" / "text"
    result = bench.run(bench_config(bench_out, f"models=[{NAME}]", "lengths=[64]", "flops=false", "inference=false"))
    (row,) = result["rows"]
    assert "skipped" not in row and row["tokens_per_s"] > 0, row

    from lra_bench.reporting.dashboard import main as dashboard_main
    from lra_bench.reporting.report import main as report_main

    assert report_main(["--runs", str(logs), "--bench", str(tmp_path / "bench"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| {NAME} |" in report and f"**{NAME}**" in report  # its runs and its bench row
    spec = tmp_path / "dashboard.json"
    assert dashboard_main(["--dry-run", "--runs", str(logs), "--bench", str(tmp_path / "bench"), "--out", str(spec)]) == 0
    assert NAME in spec.read_text()
