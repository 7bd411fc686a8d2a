"""The run folder: atomic checkpoints, resuming from any readable checkpoint, one writer at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra_bench import train as train_mod
from lra_bench.errors import RunFolderBusy
from lra_bench.training.checkpoint_io import atomic_write
from lra_bench.training.run_lock import RunLock
from lra_bench.training.run_state import remove_stale_temp_files, resume_checkpoint


def fake_checkpoint(path: Path, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}}, path)


def test_a_write_killed_midway_leaves_the_old_checkpoint_whole(tmp_path: Path) -> None:
    """SIGKILL during a checkpoint write (the issue: TMPDIR on tmpfs, a copy over the good file left 0 bytes)."""
    target = tmp_path / "checkpoints" / "periodic.ckpt"
    fake_checkpoint(target, 20)
    before = target.read_bytes()
    code = ("import os, signal, sys; from pathlib import Path; from lra_bench.training.checkpoint_io import atomic_write\n"
            "def write(f):\n    f.write(b'x' * 100000); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write(Path({str(target)!r}), write)")
    proc = subprocess.run([sys.executable, "-c", code], env=os.environ | {"TMPDIR": str(tmp_path / "elsewhere")})
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before  # untouched: the new bytes went to a temp file beside it
    leftovers = list(target.parent.glob(".periodic.ckpt.tmp-*"))
    assert len(leftovers) == 1
    remove_stale_temp_files(tmp_path)
    assert not list(target.parent.glob(".*.tmp-*"))


def test_a_failed_write_removes_its_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda f: (f.write(b"{"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert not target.exists() and not list(tmp_path.iterdir())


def test_resume_never_starts_over_while_a_readable_checkpoint_exists(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder).mkdir()
    (folder / "periodic.ckpt").write_bytes(b"")  # destroyed
    (folder / "last.ckpt").write_bytes(b"\x80\x02 truncated")
    fake_checkpoint(folder / "best-step40.ckpt", 40)
    report: list[str] = []
    assert resume_checkpoint(tmp_path, report) == (folder / "best-step40.ckpt", 40)
    assert any("periodic.ckpt (0 bytes" in line for line in report) and any("last.ckpt" in line for line in report)
    fake_checkpoint(folder / "periodic.ckpt", 60)
    assert resume_checkpoint(tmp_path) == (folder / "periodic.ckpt", 60)  # the furthest readable one


def hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from pathlib import Path; from lra_bench.training.run_lock import RunLock\n"
            f"RunLock(Path({str(folder)!r})).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_a_run_folder_is_refused_naming_the_first(run_config, tmp_path: Path) -> None:
    cfg = run_config()
    holder = hold_lock(Path(cfg.paths.output_dir))
    try:
        with pytest.raises(RunFolderBusy, match=rf"is being written by pid {holder.pid}, started .* -c"):
            train_mod.train(cfg)
        assert not (Path(cfg.paths.output_dir) / "error.json").exists()  # the busy folder is not touched
    finally:
        holder.kill()
        holder.wait()
    result = train_mod.train(cfg)  # the holder died: its lock is gone, the folder is taken over
    assert result["global_step"] > 0


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path: Path, caplog) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(f'{{"pid": {int(dead.stdout)}, "started": "earlier", "command": "train"}}')
    with caplog.at_level("INFO"):
        with RunLock(tmp_path):
            assert RunLock(tmp_path).holder()["pid"] == os.getpid()
    assert f"taking over {tmp_path / '.lock'} from pid {int(dead.stdout)}" in caplog.text


def test_a_clean_exit_releases_the_lock_so_a_rerun_takes_nothing_over(tmp_path: Path, caplog) -> None:
    with RunLock(tmp_path):
        assert RunLock(tmp_path).holder()["pid"] == os.getpid()
    assert (tmp_path / ".lock").read_text() == "" and RunLock(tmp_path).holder() == {}
    with caplog.at_level("INFO"):
        with RunLock(tmp_path):
            pass
    assert "taking over" not in caplog.text


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_leaves_nothing_broken_and_a_rerun_resumes(listops_root: Path, tmp_path: Path) -> None:
    """A real ENOSPC: the log folder is a small tmpfs (its own mount namespace) filled up at step 4; the next
    checkpoint or log write fails. Then the space is freed and the same command resumes."""
    from tests.conftest import TINY_RUN

    logs, out = tmp_path / "logs", tmp_path / "out"
    logs.mkdir()
    out.mkdir()
    cmd = " ".join([sys.executable, "-m", "lra_bench.train", *TINY_RUN, f"paths.data_dir={listops_root}", f"paths.log_dir={logs}",
                    "trainer.max_epochs=3", "checkpoint_every_n_steps=2", "+callbacks.fill._target_=tests.helpers.FillDiskAtStep",
                    "+callbacks.fill.step=4", f"+callbacks.fill.filler={logs}/filler"])
    script = f"""
set -u
mount -t tmpfs -o size=24m tmpfs {logs} || exit 90
{cmd} > {out}/first.out 2> {out}/first.err; echo $? > {out}/first.rc
find {logs} -type f -size 0 -not -name '*.done' -not -name '.lock' > {out}/empty.txt
find {logs} -name '*.tmp-*' > {out}/temps.txt
rm -f {logs}/filler
{cmd} > {out}/second.out 2> {out}/second.err; echo $? > {out}/second.rc
find {logs} -name result.json > {out}/results.txt
"""
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=Path(train_mod.__file__).parents[1],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    first_err = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "2", first_err[-3000:]
    lines = [line for line in first_err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "rerun the same command" in lines[0], first_err[-3000:]
    assert "Traceback" not in first_err
    assert (out / "empty.txt").read_text() == "", "0-byte files left behind"
    assert (out / "temps.txt").read_text() == "", "temp files left behind"
    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()[-3000:]
    assert "resuming from" in (out / "second.out").read_text() + (out / "second.err").read_text()
    assert (out / "results.txt").read_text().strip()


@pytest.mark.slow
def test_two_identical_commands_started_together_one_runs_the_other_refuses(listops_root: Path, tmp_path: Path) -> None:
    from tests.conftest import TINY_RUN

    cmd = [sys.executable, "-m", "lra_bench.train", *TINY_RUN, f"paths.data_dir={listops_root}", f"paths.log_dir={tmp_path}",
           "+callbacks.slow._target_=tests.helpers.SlowDown", "+callbacks.slow.seconds=0.1"]
    root = Path(train_mod.__file__).parents[1]
    first = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=300)
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], (err1[-2000:], err2[-2000:])
    loser_err = err2 if second.returncode == 2 else err1
    winner = first if first.returncode == 0 else second
    assert f"is being written by pid {winner.pid}" in loser_err and "Traceback" not in loser_err
    (folder,) = (tmp_path / "runs").glob("*/*")
    steps = [line.split(",") for line in (folder / "csv" / "metrics.csv").read_text().splitlines()[1:]]
    assert not list((folder / "checkpoints").glob("*-v1.ckpt"))
    assert (folder / "result.json").is_file() and len(steps) == len({tuple(s) for s in steps})  # no row twice


@pytest.mark.slow
def test_a_read_only_log_folder_stops_with_one_line(listops_root: Path, tmp_path: Path) -> None:
    """Hydra makes the run folder before any job code: the check runs first and says what to do, no traceback."""
    from tests.conftest import TINY_RUN

    logs = tmp_path / "logs"
    logs.mkdir()
    cmd = " ".join([sys.executable, "-m", "lra_bench.train", *TINY_RUN, f"paths.data_dir={listops_root}", f"paths.log_dir={logs}"])
    script = f"mount -t tmpfs -o size=4m tmpfs {logs} && mount -o remount,ro {logs} && {cmd}"
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=Path(train_mod.__file__).parents[1],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"error: cannot write the log folder {logs}: Read-only file system; set "
                                                    "paths.log_dir=<a writable folder> (or free space / fix its permissions)")
    assert "Traceback" not in proc.stderr
