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
from lra_bench.training.checkpoint_io import AtomicCheckpointIO, atomic_write, checksum_path, save_checksummed
from lra_bench.training.run_lock import RunLock
from lra_bench.training.run_state import remove_stale_temp_files, resume_checkpoint


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


def test_resume_never_starts_over_while_a_readable_checkpoint_exists(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder).mkdir()
    (folder / "periodic.ckpt").write_bytes(b"")  # destroyed
    (folder / "last.ckpt").write_bytes(b"\x80\x02 truncated")
    fake_checkpoint(folder / "best-step40.ckpt", 40)
    report: list[str] = []
    assert resume_checkpoint(tmp_path, report) == (folder / "best-step40.ckpt", 40)
    assert any("periodic.ckpt: 0 bytes" in line for line in report) and any("last.ckpt: no checksum" in line for line in report)
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
    report: list[str] = []
    assert resume_checkpoint(tmp_path, report) == (folder / "periodic.ckpt", 40)
    assert report == [f"skipping {folder / 'last.ckpt'}: fails its checksum (last.ckpt.sha256): its bytes changed after it "
                      "was written"]
    with pytest.raises(Exception, match=r"last.ckpt: fails its checksum"):  # Lightning's own load path checks too
        AtomicCheckpointIO().load_checkpoint(folder / "last.ckpt")
    (folder / "periodic.ckpt").write_bytes((folder / "periodic.ckpt").read_bytes()[:-10])
    (checksum_path(folder / "last.ckpt")).unlink()
    report.clear()
    assert resume_checkpoint(tmp_path, report) is None
    assert [line.split(": ", 1)[1] for line in report] == ["no checksum (last.ckpt.sha256 is missing)",
                                                          "fails its checksum (periodic.ckpt.sha256): its bytes changed after it was written"]


def test_another_models_checkpoint_is_skipped_naming_the_tensor_before_anything_is_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    fake_checkpoint(folder / "last.ckpt", 60, width=8)  # another model, the same step
    fake_checkpoint(folder / "periodic.ckpt", 60)
    report: list[str] = []
    assert resume_checkpoint(tmp_path, report, expected_shapes={"w": (1024, 4)}) == (folder / "periodic.ckpt", 60)
    assert report == [f"skipping {folder / 'last.ckpt'}: another model's weights: w is (1024, 8) in the file, (1024, 4) "
                      "in this model"]


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
