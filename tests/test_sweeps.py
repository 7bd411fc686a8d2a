"""Hydra multiruns: one W&B run per job in one group, fault isolation, reruns that skip finished cells,
the report built from a real small sweep, and the SLURM launcher preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lra_bench.reporting import report
from lra_bench.config import PROJECT_ROOT
from lra_bench.training.sweep import collect
from tests.conftest import compose_config
from tests.wandb_records import read_run

TINY = ["trainer=cpu", "model.d_model=16", "model.net.backbone.n_layers=1", "task.max_length=64", "task.batch_size=16",
        "task.datamodule.num_workers=0", "trainer.max_epochs=1", "~callbacks.progress_bar"]


def multirun(args: list[str], data: Path, logs: Path, wandb_dir: Path, sweep: str | None) -> subprocess.CompletedProcess:
    """``sweep=None`` leaves the sweep name to its default (built from the command)."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "lra_bench.train", "-m", *args, f"paths.data_dir={data}", f"paths.log_dir={logs}",
           *([f"sweep_name={sweep}"] if sweep else []), *TINY]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=300)


@pytest.fixture(scope="module")
def sweep_2x2(listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    logs = tmp_path_factory.mktemp("logs")
    proc = multirun(["model=mega,transformer", "seed=1,2", "logger=wandb"], listops_root, logs, logs / "wandb_home", None)
    sweeps = sorted((logs / "multiruns").iterdir()) if (logs / "multiruns").is_dir() else []
    return {"proc": proc, "sweeps": sweeps, "dir": sweeps[0] if sweeps else None, "logs": logs}


def test_a_2x2_multirun_makes_four_wandb_runs_in_one_group(sweep_2x2: dict) -> None:
    """With the default sweep name (the README's ``-m ... seed=1,2``): the command's overrides, one folder, one
    group and one summary for all four jobs."""
    assert sweep_2x2["proc"].returncode == 0, sweep_2x2["proc"].stderr[-2000:]
    assert len(sweep_2x2["sweeps"]) == 1, sweep_2x2["sweeps"]
    assert "model=mega,transformer" in sweep_2x2["dir"].name and "paths.data_dir" not in sweep_2x2["dir"].name
    jobs = collect(sweep_2x2["dir"])
    assert len(jobs) == 4 and all(j["status"] == "finished" for j in jobs)
    assert sorted(j["job"] for j in jobs) == ["model=mega,seed=1", "model=mega,seed=2", "model=transformer,seed=1",
                                              "model=transformer,seed=2"]
    runs = [read_run(d)["run"] for d in sweep_2x2["dir"].glob("*/wandb/offline-run-*")]
    assert len(runs) == 4 and {r["group"] for r in runs} == {sweep_2x2["dir"].name} and {r["job_type"] for r in runs} == {"listops"}
    assert sorted(tuple(sorted(r["tags"])) for r in runs) == [("listops", "mega")] * 2 + [("listops", "transformer")] * 2
    assert len({r["id"] for r in runs}) == 4 and all(r["name"].startswith(("mega-listops:", "transformer-listops:")) for r in runs)
    assert flat(f"sweep {sweep_2x2['dir'].name}: 4 cells") in flat(sweep_2x2["proc"].stdout)
    summary = json.loads((sweep_2x2["dir"] / "sweep_summary.json").read_text())
    assert (summary["cells"], summary["finished"], summary["failed"]) == (4, 4, [])


def flat(text: str) -> str:
    """Rich wraps and centres a long table title: compare without whitespace."""
    return "".join(text.split())


def test_the_report_of_the_sweep_has_the_right_cells(sweep_2x2: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert report.main(["--runs", str(sweep_2x2["logs"]), "--bench", str(tmp_path / "none"), "--out", str(out)]) == 0
    runs = report.local_runs(sweep_2x2["logs"])
    rows = {r["model"]: r for r in report.table_rows(runs)}
    assert set(rows) == {"mega", "transformer"}
    for model, row in rows.items():
        accs = [100 * r["test/acc"] for r in runs if r["model"] == model]
        mean, _, n = row["listops"]
        assert n == 2 and mean == pytest.approx(sum(accs) / 2) and row["scale"] == "reduced" and row["avg"] is None
        assert all(t not in row for t in ("text", "image"))
    md = (out / "report.md").read_text()
    assert "| **mega** | reduced |" in md and "| Mega | published | 63.14 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    for png in ("accuracy_by_task.png", "accuracy_vs_speed.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_a_failing_cell_is_isolated_and_a_rerun_skips_finished_cells(listops_root: Path, tmp_path: Path) -> None:
    """The other cells run, the sweep exits 1 naming the failed one (also in sweep_summary.json); the same command
    rerun finds the same (default-named) sweep and trains only what did not finish."""
    args = ["optimizer.lr=1e-3,-1"]
    first = multirun(args, listops_root, tmp_path, tmp_path / "wb", None)
    assert first.returncode == 1
    (sweep,) = (tmp_path / "multiruns").iterdir()
    assert "optimizer.lr=1e-3,-1" in sweep.name
    jobs = {j["job"]: j for j in collect(sweep)}
    assert jobs["optimizer.lr=0.001"]["status"] == "finished"
    assert jobs["optimizer.lr=-1"]["status"] == "failed" and "optimizer.lr=-1: must be a number > 0" in jobs["optimizer.lr=-1"]["error"]
    assert "1 of 2 cells did not finish: optimizer.lr=-1 (failed: ConfigError: optimizer.lr=-1" in first.stdout + first.stderr
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["sweep"], summary["cells"], summary["finished"], summary["failed"]) == (sweep.name, 2, 1, ["optimizer.lr=-1"])
    second = multirun(args, listops_root, tmp_path, tmp_path / "wb", None)
    assert second.returncode == 1
    assert "already finished" in second.stdout + second.stderr  # the good cell is not trained again
    assert "finished (earlier)" in second.stdout


def test_the_default_sweep_name_is_the_commands_overrides_without_the_excluded_keys() -> None:
    from lra_bench.training.sweep import default_sweep_name

    exclude = ["paths.data_dir", "sweep_name"]
    assert default_sweep_name(["seed=1,2,3", "paths.data_dir=/d", "model=mega"], exclude) == "model=mega,seed=1,2,3"
    assert default_sweep_name(["model=mega", "seed=1,2,3"], exclude) == default_sweep_name(["seed=1,2,3", "model=mega"], exclude)
    assert default_sweep_name([], exclude) == "default"


def test_the_slurm_launcher_preset_composes_with_ddp() -> None:
    cfg = compose_config(["hydra/launcher=lra_slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                          "paths.output_dir=/tmp/x"], config_name="train", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm


@pytest.mark.parametrize("sweep", ["smoke", "seeds", "lra-table"])
def test_sweep_presets_compose(sweep: str) -> None:
    cfg = compose_config([f"+sweep={sweep}", "paths.output_dir=/tmp/x"], return_hydra_config=True)
    assert str(cfg.hydra.mode).endswith("MULTIRUN") and cfg.hydra.sweeper.params


def test_a_local_multirun_with_ddp_is_refused_with_the_supported_way(listops_root: Path, tmp_path: Path) -> None:
    proc = multirun(["seed=1,2", "logger=none", "+trainer.strategy=ddp", "trainer.devices=2"], listops_root, tmp_path,
                    tmp_path / "wb", "ddp")
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error: trainer.strategy=ddp") and "hydra/launcher=lra_slurm" in message
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("multiruns/ddp/*/checkpoints"))


@pytest.mark.slow
def test_the_same_sweep_started_twice_runs_each_job_once(listops_root: Path, tmp_path: Path) -> None:
    """One run folder, one writer, in sweeps too: two identical sweeps started together never write one job's
    folder at once; a busy job refuses with one line naming the other process and its sweep goes on."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "lra_bench.train", "-m", "seed=1,2,3", "logger=csv", f"paths.data_dir={listops_root}",
           f"paths.log_dir={tmp_path}", "sweep_name=twice", *TINY, "+callbacks.slow._target_=tests.helpers.SlowDown",
           "+callbacks.slow.seconds=0.05"]
    first = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, out[0][1][-2000:] + out[1][1][-2000:]
    rows = collect(tmp_path / "multiruns" / "twice")
    assert len(rows) == 3 and all(r["status"] == "finished" for r in rows), rows
    for job in (Path(r["folder"]) for r in rows):
        assert (job / "result.json").is_file()
        rows = (job / "csv" / "metrics.csv").read_text().splitlines()
        assert len(rows) == len(set(rows)), f"{job.name}: CSV rows written twice"
        assert not list((job / "checkpoints").glob("*-v1.ckpt"))
    refused = out[0][1] + out[1][1]
    if "is being written by pid" in refused:  # they met on a job: one line, naming the other process
        assert f"pid {first.pid}" in refused or f"pid {second.pid}" in refused
    assert "Traceback" not in refused


@pytest.mark.slow
def test_a_run_cut_by_its_time_limit_says_so_and_a_requeued_rerun_true_job_resumes_it(listops_root: Path,
                                                                                       tmp_path: Path) -> None:
    """``rerun=true`` under SLURM job 7 and a 2 s ``trainer.max_time`` (12 steps of at least 0.3 s): cut by time,
    result.json says ``stop_reason: max_time`` and the summary says it plainly. The job requeued (same command and job id; here with
    no time limit) resumes instead of setting the progress aside again, and ends at max_epochs. Another job with
    rerun=true starts over."""
    from tests.conftest import TINY_RUN

    def train(job: str, *extra: str, restart: str = "0") -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lra_bench.train", *TINY_RUN, "trainer.max_epochs=2", "checkpoint_every_n_steps=1",
               f"paths.data_dir={listops_root}", f"paths.log_dir={tmp_path}", "rerun=true",
               "+callbacks.slow._target_=tests.helpers.SlowDown", "+callbacks.slow.seconds=0.3", *extra]
        env = os.environ | {"SLURM_JOB_ID": job, "SLURM_RESTART_COUNT": restart}
        return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600)

    cut = train("7", "trainer.max_time=00:00:00:02")
    assert cut.returncode == 0, cut.stderr[-2000:]
    (folder,) = (tmp_path / "runs").glob("*/*")
    first = json.loads((folder / "result.json").read_text())
    assert first["stop_reason"] == "max_time" and first["max_time_s"] == 2 and first["global_step"] < 12
    assert flat("the time limit fired") in flat(cut.stdout) and "planned_steps" not in first
    requeued = train("7", "trainer.max_time=null", restart="1")
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    log = requeued.stdout + requeued.stderr
    assert "job 7 already started this run over" in log and "cut by its time limit" in log and "resuming from" in log
    assert not list(folder.glob("previous-*"))  # the requeue set nothing aside
    done = json.loads((folder / "result.json").read_text())
    assert (done["stop_reason"], done["global_step"]) == ("max_epochs", 12) and flat("time limit fired") not in flat(requeued.stdout)
    again = train("8", "trainer.max_time=00:00:00:01")
    assert again.returncode == 0 and len(list(folder.glob("previous-*"))) == 1, again.stderr[-2000:]


def test_rerun_true_sets_aside_once_per_slurm_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requeue (same SLURM_JOB_ID, higher SLURM_RESTART_COUNT) resumes; a second command in the same attempt (an
    salloc shell, a batch script running it twice) is a new rerun=true and starts over, as the README says."""
    from lra_bench.training.run_state import set_aside_once_per_job

    def finished_once() -> None:
        (tmp_path / "result.json").write_text("{}")

    monkeypatch.delenv("LRA_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    finished_once()
    moved, requeued = set_aside_once_per_job(tmp_path)
    assert moved is not None and requeued is None
    finished_once()
    moved, requeued = set_aside_once_per_job(tmp_path)  # the same attempt, a second command: start over again
    assert moved is not None and requeued is None
    assert len(list(tmp_path.glob("previous-*"))) == 2  # each set aside apart, even within one second
    finished_once()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued by SLURM: resume
    assert set_aside_once_per_job(tmp_path) == (None, "7") and (tmp_path / "result.json").is_file()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert set_aside_once_per_job(tmp_path) == (None, "7")
    monkeypatch.setenv("LRA_JOB_ID", "x")  # other schedulers: every attempt of the job resumes
    set_aside_once_per_job(tmp_path)
    assert set_aside_once_per_job(tmp_path) == (None, "x")


def test_the_sweep_summary_lists_a_cell_with_a_malformed_record_as_failed(tmp_path: Path) -> None:
    """A job folder whose result.json or error.json is not a record (a JSON array, truncated) is a failed cell in
    the summary, not a traceback at the end of the sweep ('list' has no .get, JSONDecodeError)."""
    for seed, name, text in ((1, "result.json", "[]"), (2, "result.json", "{"), (3, "error.json", "[1]"),
                             (4, "error.json", "{")):
        job = tmp_path / f"seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- model=mega\n")
        (job / name).write_text(text)
    rows = collect(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [(f"seed={s}", "failed") for s in (1, 2, 3, 4)]
    assert all(r["error"] for r in rows)


def test_the_sweep_table_says_which_cells_their_time_limit_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lra_bench.training.sweep import print_table

    for seed, reason in ((1, "max_time"), (2, "max_epochs")):
        job = tmp_path / f"seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- model=mega\n")
        (job / "result.json").write_text(json.dumps({"task": "listops", "model": "mega", "val/acc_best": 0.5,
                                                     "test/acc": 0.25, "stop_reason": reason}))
    rows = collect(tmp_path)
    assert [(r["job"], r["stop_reason"]) for r in rows] == [("seed=1", "max_time"), ("seed=2", "max_epochs")]
    print_table("s", rows)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "cut by trainer.max_time" in line] == [next(x for x in lines if "seed=1" in x)]


def test_only_a_run_its_time_limit_cut_goes_on_and_only_with_more_time() -> None:
    from lra_bench.training.stopping import continues_after_time_limit, time_limit_s

    assert time_limit_s("00:00:09:00") == 540 and time_limit_s({"hours": 1}) == 3600 and time_limit_s(None) is None
    cut = {"stop_reason": "max_time", "max_time_s": 540.0}
    assert continues_after_time_limit(cut, "00:00:20:00") and continues_after_time_limit(cut, None)
    assert not continues_after_time_limit(cut, "00:00:09:00") and not continues_after_time_limit(cut, "00:00:05:00")
    assert not continues_after_time_limit({"stop_reason": "max_epochs", "max_time_s": 540.0}, None)


@pytest.mark.slow
def test_a_signal_to_a_local_sweep_stops_it_and_the_same_command_resumes(listops_root: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (or Ctrl-C) reaches the whole local sweep: the job it hit saves its checkpoint and the sweep exits 143
    instead of starting the next job (before, each signal only skipped to the next one); rerun, the job resumes."""
    monkeypatch.setenv("LRA_BENCH_FAULT", f"train_batch@2:SIGTERM:{tmp_path / 'fired'}")
    first = multirun(["seed=1,2", "logger=csv"], listops_root, tmp_path, tmp_path / "wb", "signalled")
    assert first.returncode == 143, first.stderr[-2000:]
    jobs = sorted((tmp_path / "multiruns" / "signalled").glob("*seed=*"))
    assert [j.name.split("seed=")[1][:1] for j in jobs] == ["1"]  # the second job never started
    assert (jobs[0] / "checkpoints" / "preempted.ckpt").is_file() and not (jobs[0] / "result.json").exists()
    second = multirun(["seed=1,2", "logger=csv"], listops_root, tmp_path, tmp_path / "wb", "signalled")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout + second.stderr
    assert len(list((tmp_path / "multiruns" / "signalled").glob("*/result.json"))) == 2
