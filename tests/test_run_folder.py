"""The run folder: atomic checkpoints, resuming from any readable checkpoint, one writer at a time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra_bench import train as train_mod
from lra_bench.errors import RunFolderBusy
from lra_bench.training.checkpoint_io import AtomicCheckpointIO, atomic_write, checksum_path, save_checksummed
from lra_bench.training.run_lock import RunLock
from lra_bench.training.run_state import finished_result, remove_stale_temp_files, resume_checkpoint


def fake_checkpoint(path: Path, step: int, width: int = 4) -> None:
    """A checkpoint as the run writes them (with its checksum), of a one-tensor "model" ``width`` wide."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checksummed({"global_step": step, "state_dict": {"w": torch.arange(float(width * 1024))[:width * 1024]
                                                          .reshape(1024, width)}}, path)


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


@pytest.mark.parametrize("text", ["[]", '"done"', "null", "3", "{}", '{"test/acc": 0.5}'])
def test_a_result_json_that_is_not_a_runs_result_leaves_the_run_unfinished(tmp_path: Path, text: str) -> None:
    # a JSON array once reached result.get(...) in the rerun's time-limit check: a traceback instead of a resume
    (tmp_path / "result.json").write_text(text)
    assert finished_result(tmp_path) is None
    (tmp_path / "result.json").write_text('{"task": "listops", "model": "mega", "test/acc": 0.5}')
    assert finished_result(tmp_path) == {"task": "listops", "model": "mega", "test/acc": 0.5}


def test_resume_never_starts_over_while_a_readable_checkpoint_exists(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder).mkdir()
    (folder / "periodic.ckpt").write_bytes(b"")  # destroyed
    (folder / "last.ckpt").write_bytes(b"\x80\x02 truncated")
    fake_checkpoint(folder / "best-step40.ckpt", 40)
    skipped: dict = {}
    assert resume_checkpoint(tmp_path, skipped) == (folder / "best-step40.ckpt", 40)
    assert {p.name: str(e) for p, e in skipped.items()} == {"periodic.ckpt": "0 bytes",
                                                          "last.ckpt": "no checksum (last.ckpt.sha256 is missing)"}
    fake_checkpoint(folder / "periodic.ckpt", 60)
    assert resume_checkpoint(tmp_path) == (folder / "periodic.ckpt", 60)  # the furthest readable one


def test_a_checkpoint_with_zeroed_bytes_inside_is_skipped_by_name_for_the_next_furthest(tmp_path: Path) -> None:
    """4 KiB zeroed in the middle, same size: torch still loads it (the zip records are not checked), the checksum
    is not matched."""
    folder = tmp_path / "checkpoints"
    fake_checkpoint(folder / "last.ckpt", 60)
    fake_checkpoint(folder / "periodic.ckpt", 40)
    data = bytearray((folder / "last.ckpt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    (folder / "last.ckpt").write_bytes(bytes(data))
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 60  # loads, silently wrong
    skipped: dict = {}
    assert resume_checkpoint(tmp_path, skipped) == (folder / "periodic.ckpt", 40)
    assert {p.name: str(e) for p, e in skipped.items()} == {
        "last.ckpt": "fails its checksum (last.ckpt.sha256): its bytes changed after it was written"}
    with pytest.raises(Exception, match=r"last.ckpt: fails its checksum"):  # Lightning's own load path checks too
        AtomicCheckpointIO().load_checkpoint(folder / "last.ckpt")
    (folder / "periodic.ckpt").write_bytes((folder / "periodic.ckpt").read_bytes()[:-10])
    (checksum_path(folder / "last.ckpt")).unlink()
    skipped.clear()
    assert resume_checkpoint(tmp_path, skipped) is None
    assert {p.name: str(e) for p, e in skipped.items()} == {
        "last.ckpt": "no checksum (last.ckpt.sha256 is missing)",
        "periodic.ckpt": "fails its checksum (periodic.ckpt.sha256): its bytes changed after it was written"}


def test_another_models_checkpoint_is_skipped_naming_the_tensor_before_anything_is_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    fake_checkpoint(folder / "last.ckpt", 60, width=8)  # another model, the same step
    fake_checkpoint(folder / "periodic.ckpt", 60)
    skipped: dict = {}
    assert resume_checkpoint(tmp_path, skipped, expected_shapes={"w": (1024, 4)}) == (folder / "periodic.ckpt", 60)
    assert {p.name: str(e) for p, e in skipped.items()} == {
        "last.ckpt": "another model's weights: w is (1024, 8) in the file, (1024, 4) in this model"}


def test_a_checkpoint_written_over_keeps_a_matching_checksum_at_every_moment(tmp_path: Path, monkeypatch) -> None:
    """The sidecar lists the new digest and the old one before the rename, only the new one after it: a kill at any
    point leaves a checkpoint that matches its sidecar."""
    import lra_bench.training.checkpoint_io as io

    path = tmp_path / "periodic.ckpt"
    fake_checkpoint(path, 10)
    seen: list[tuple[bool, int]] = []

    def check(tmp: Path) -> None:  # just before the rename: the old file in place, the sidecar listing both
        seen.append((io.file_digest(path) in io.listed_digests(path), len(io.listed_digests(path))))

    original = io.atomic_write
    monkeypatch.setattr(io, "atomic_write", lambda p, write, before_replace=None: original(
        p, write, (lambda t: (before_replace(t), check(t))) if before_replace else None))
    fake_checkpoint(path, 20)
    assert seen == [(True, 2)]
    assert io.inspect_checkpoint(path)["global_step"] == 20 and len(io.listed_digests(path)) == 1


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


def test_a_killed_writers_forked_child_does_not_keep_the_folder_locked(tmp_path: Path) -> None:
    """A DataLoader worker is a fork of the run: it shared the lock and outlived its killed parent by seconds, so the
    immediate rerun found the folder busy."""
    code = ("import os, signal, time; from pathlib import Path; from lra_bench.training.run_lock import RunLock\n"
            f"RunLock(Path({str(tmp_path)!r})).acquire()\n"
            "if os.fork() == 0:\n    time.sleep(30); os._exit(0)\n"
            "print('forked', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "forked"
    proc.wait()
    for _ in range(50):  # the parent is dead, its child sleeps 30 s: the folder is free (at once; a loaded machine may lag)
        try:
            with RunLock(tmp_path):
                return
        except RunFolderBusy:
            time.sleep(0.1)
    raise AssertionError("the killed writer's forked child still holds the run folder's lock")


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


def test_another_models_last_ckpt_is_skipped_and_a_truncated_best_is_never_tested(run_config, listops_root: Path,
                                                                                   tmp_path: Path, caplog) -> None:
    """last.ckpt replaced by another model's checkpoint at the same step: skipped with the reason, the run resumes
    from its periodic checkpoint. Then the best checkpoint truncated after fit: the test step tests the final weights
    and says so (it loaded the truncated file before: a traceback)."""
    import shutil

    from tests.conftest import TINY_RUN, compose_config

    cfg = run_config("checkpoint_every_n_steps=2")
    out = Path(cfg.paths.output_dir)
    train_mod.train(cfg)
    other = compose_config([*TINY_RUN, f"paths.data_dir={listops_root}", f"paths.output_dir={tmp_path / 'other'}",
                            "checkpoint_every_n_steps=2", "model.d_model=16", "model.net.head_hidden=16"])
    train_mod.train(other)
    for name in ("last.ckpt", "last.ckpt.sha256"):
        shutil.copy(tmp_path / "other" / "checkpoints" / name, out / "checkpoints" / name)
    (out / "result.json").unlink()
    with caplog.at_level("INFO"):
        again = train_mod.train(cfg)
    assert f"skipping {out / 'checkpoints' / 'last.ckpt'}: another model's weights: net.embedding" in caplog.text
    assert f"resuming from {out / 'checkpoints' / 'periodic.ckpt'} (step 12)" in caplog.text  # written when fit ended
    assert again["global_step"] == 12 and again["tested_weights"] == "best_checkpoint"
    assert (out / "checkpoints" / "unusable" / "last.ckpt").is_file()  # set aside, out of the new last.ckpt's way

    best = Path(again["best_checkpoint"])
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    (out / "result.json").unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        last = train_mod.train(cfg)
    assert re.search(rf"resuming from {re.escape(str(out / 'checkpoints'))}/(periodic|last).ckpt \(step 12\)", caplog.text)
    assert f"skipping {best}: fails its checksum ({best.name}.sha256): its bytes changed after it was written" in caplog.text
    assert (f"the best checkpoint {best} is unusable (it failed its checks at start-up and was moved to "
            f"{best.parent / 'unusable'}): testing the final weights instead") in caplog.text
    assert last["tested_weights"] == "final" and 0.0 <= last["test/acc"] <= 1.0
