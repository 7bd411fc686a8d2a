"""Exact resume: a run killed in any phase of its life, rerun with the same command, ends as an uninterrupted run.

The kill matrix: every named phase (``lra_bench.training.fault_points``) x SIGKILL and SIGTERM. Each case kills a
real training process with a real signal at that phase (``LRA_BENCH_FAULT``), reruns the same command, and compares
``result.json`` and every CSV row (timing columns aside: they are wall-clock measurements) with one uninterrupted
run's. The run: quick ListOps (96 training rows, batch 8: 12 steps an epoch), 30 steps, validation and a checkpoint
every 10 steps, so checkpoints, validations and epoch ends fall on different steps and on the same one. All runs are
forked from one process (``tests.forked_runs``): a case costs its training, not Python's start-up.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.listops import ListOpsSpec, generate
from lra_bench.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

TIMING = {"train/step_time", "train/samples_per_sec", "train/tokens_per_sec", "train/peak_memory_mb"}
COMMON = ["experiment=quick", "model=transformer", "logger=csv", "~callbacks.progress_bar", "task.batch_size=8",
          "task.max_length=64", "task.datamodule.num_workers=0", "model.d_model=16", "model.net.head_hidden=16",
          "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2", "model.net.backbone.d_ff=32",
          "trainer.max_steps=30", "trainer.max_epochs=-1", "trainer.log_every_n_steps=1"]
EVERY_10 = ["checkpoint_every_n_steps=10", "trainer.val_check_interval=10", "trainer.check_val_every_n_epoch=null"]
# validation only at epoch ends (12 steps), the checkpoint interval a divisor of the epoch: they coincide
EPOCH_ENDS = ["checkpoint_every_n_steps=6", "trainer.val_check_interval=1.0"]

# phase -> where LRA_BENCH_FAULT strikes (a new phase is one line)
PHASES = {
    "before_first_checkpoint": "train_batch@5",
    "mid_epoch": "train_batch@15",
    "validation_after_checkpoint": "validation@20",
    "epoch_boundary": "epoch_end@24",
    "checkpoint_write": "checkpoint_write@20",
    "after_fit_before_test": "after_fit",
    "test": "test",
    "result_write": "result_write",
}
SIGNALS = ("SIGKILL", "SIGTERM")
# (case, run options, fault) beyond the matrix
EXTRA = {
    "epoch_end_validation_after_checkpoint-SIGKILL": (EPOCH_ENDS, "validation@12:SIGKILL"),
    "mid_epoch_with_a_worker-SIGKILL": (EVERY_10 + ["task.datamodule.num_workers=1"], "train_batch@15:SIGKILL"),
}


def cases() -> dict[str, tuple[list[str], str]]:
    matrix = {f"{phase}-{sig}": (EVERY_10, f"{point}:{sig}") for phase, point in PHASES.items() for sig in SIGNALS}
    return matrix | EXTRA


def run_folder(logs: Path) -> Path:
    (folder,) = (logs / "runs").glob("*/*")
    return folder


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING and v != ""} for r in csv.DictReader(f)]


def outcome(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    kept = {k: v for k, v in result.items() if k not in ("wall_time_s", "best_checkpoint") and not k.startswith("perf/")}
    return kept | {"best_checkpoint": Path(result["best_checkpoint"]).name,
                   "overrides": [o for o in result["overrides"] if not o.startswith(("paths.", "task.datamodule.num_workers"))]}


def forked(runs: list[dict]) -> list[int]:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env.pop("LRA_BENCH_FAULT", None)
    done = subprocess.run([sys.executable, "-m", "tests.forked_runs"], input=json.dumps(runs), capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_kill_data(data: Path) -> None:
    """The kill tests' tiny quick-ListOps data (96/40/40 rows, short): a few steps per epoch, several epochs."""
    generate(data / "listops-quick", {"train": 96, "val": 40, "test": 40}, seed=0,
             spec=ListOpsSpec(max_depth=4, max_args=4, min_length=10, max_length=60), progress=False)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted runs, then each case: the killed attempt and its rerun (same command, no fault)."""
    root = tmp_path_factory.mktemp("kill-matrix")
    data = root / "data"
    write_kill_data(data)

    def command(options: list[str], logs: Path) -> list[str]:
        return [*COMMON, *options, f"paths.data_dir={data}", f"paths.log_dir={logs}"]

    references = {"every_10": EVERY_10, "epoch_ends": EPOCH_ENDS}
    runs = [{"argv": command(opts, root / f"reference-{name}"), "log": str(root / f"reference-{name}.log")}
            for name, opts in references.items()]
    for case, (options, fault) in cases().items():
        logs = root / case
        argv = command(options, logs)
        runs.append({"argv": argv, "env": {"LRA_BENCH_FAULT": f"{fault}:{logs}.fired"}, "log": f"{logs}-killed.log"})
        runs.append({"argv": argv, "log": f"{logs}-rerun.log"})
    codes = forked(runs)
    for i, name in enumerate(references):
        assert codes[i] == 0, Path(runs[i]["log"]).read_text()[-3000:]
    out = {"root": root, "references": {name: run_folder(root / f"reference-{name}") for name in references}}
    for i, case in enumerate(cases()):
        out[case] = (codes[2 + 2 * i], codes[3 + 2 * i])
    return out


def reference_for(case: str) -> str:
    return "epoch_ends" if cases()[case][0] is EPOCH_ENDS else "every_10"


@pytest.mark.parametrize("case", list(cases()))
def test_a_run_killed_in_any_phase_reruns_to_the_uninterrupted_result_and_csv(case: str, matrix: dict) -> None:
    root = matrix["root"]
    killed, rerun = matrix[case]
    killed_log, rerun_log = (root / f"{case}-killed.log").read_text(), (root / f"{case}-rerun.log").read_text()
    assert (root / f"{case}.fired").exists(), f"the fault never fired: {killed_log[-2000:]}"
    # SIGTERM stops training with a checkpoint (143); where there is nothing to save it kills (-15), except inside the
    # test, which Lightning lets finish (0: the rerun then finds the run finished)
    assert killed in ((-9,) if case.endswith("SIGKILL") else (-15, 143, 0)), killed_log[-3000:]
    assert rerun == 0, rerun_log[-3000:]
    folder, reference = run_folder(root / case), matrix["references"][reference_for(case)]
    assert outcome(folder) == outcome(reference)
    got, expected = rows(folder), rows(reference)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a == b, f"CSV row {i} differs: {a} vs {b}"
    assert len(got) == len(expected)


def test_the_reference_runs_validate_and_checkpoint_where_the_matrix_expects(matrix: dict) -> None:
    """The phases hit what they name: validations at steps 10, 20, 30 (epoch ends at 12, 24) and at epoch ends only."""
    every_10, epoch_ends = (rows(matrix["references"][n]) for n in ("every_10", "epoch_ends"))
    assert [r["step"] for r in every_10 if "val/acc" in r] == ["9", "19", "29"]
    assert [r["epoch"] for r in epoch_ends if "val/acc" in r] == ["0", "1"]


def test_a_finished_run_with_a_truncated_result_json_redoes_its_test(matrix: dict) -> None:
    """In place (a moved run folder loses Lightning's record of its best checkpoint): a finished case, its result.json
    cut in half, rerun."""
    case = "result_write-SIGKILL"
    folder, reference = run_folder(matrix["root"] / case), matrix["references"]["every_10"]
    text = (folder / "result.json").read_text()
    (folder / "result.json").write_text(text[: len(text) // 2])
    data, log = matrix["root"] / "data", matrix["root"] / f"{case}-truncated.log"
    (code,) = forked([{"argv": [*COMMON, *EVERY_10, f"paths.data_dir={data}", f"paths.log_dir={matrix['root'] / case}"],
                       "log": str(log)}])
    assert code == 0, log.read_text()[-3000:]
    assert "resuming from" in log.read_text()
    assert outcome(folder) == outcome(reference)
    assert rows(folder) == rows(reference)


def test_a_run_whose_every_checkpoint_is_unreadable_starts_over_without_its_old_csv_rows(matrix: dict, tmp_path: Path) -> None:
    reference = matrix["references"]["every_10"]
    logs = tmp_path / "logs"
    shutil.copytree(reference.parents[2], logs)  # moved: nothing of the old folder is used
    folder = run_folder(logs)
    (folder / "result.json").unlink()
    for ckpt in (folder / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    data = matrix["root"] / "data"
    (code,) = forked([{"argv": [*COMMON, *EVERY_10, f"paths.data_dir={data}", f"paths.log_dir={logs}"],
                       "log": str(tmp_path / "rerun.log")}])
    log = (tmp_path / "rerun.log").read_text()
    assert code == 0, log[-3000:]
    assert "no usable checkpoint" in log and "dropped the" in log
    assert outcome(folder) == outcome(reference)
    assert rows(folder) == rows(reference)
