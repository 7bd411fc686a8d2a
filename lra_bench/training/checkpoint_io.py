"""Every checkpoint write and load of a run: atomic writes, a checksum beside each file, one checked way to read.

Writes: a temp file beside the target, fsync, rename. Lightning's default writer stages through fsspec, whose temp
file lives in ``TMPDIR``: on another filesystem (tmpfs) the final move is a copy, and a process killed during it
leaves a 0-byte checkpoint in place of the good one. Here ``os.replace`` is atomic: a checkpoint is either the old one
or the complete new one. A failed write (disk full) removes its temp file and names the folder.

Checksums: ``<name>.ckpt.sha256`` holds the SHA-256 of the checkpoint's bytes. Before the rename it lists the new
file's digest and the old one's, after it only the new one's, so a kill between the two leaves a pair that matches.
A checkpoint whose bytes match no listed digest (a bit flip, zeroed blocks, a copy cut short) is never loaded.

Loads: ``inspect_checkpoint`` is the one way a checkpoint is read before use (resume choice, ``ckpt_path=``, the NaN
advice, the test step); it checks the checksum, that the file is a checkpoint, and, given the model, that every
tensor has the model's shape, and raises ``UnusableCheckpoint`` with the reason. Lightning's own loads (``fit`` and
``test`` with ``ckpt_path``) go through ``AtomicCheckpointIO.load_checkpoint``, which checks the checksum again.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from lra_bench.errors import RunStorageError
from lra_bench.training.fault_points import fault_point


def atomic_write(path: Path, write, before_replace=None) -> None:
    """``write(file)`` into ``<path>.tmp-<pid>`` in the same folder, flush, fsync, then rename over ``path``
    (``before_replace(temp path)`` runs just before the rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself reaches the disk
        finally:
            os.close(fd)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise RunStorageError(
                f"cannot write {path}: {os.strerror(e.errno)}. Free space (or fix the folder's permissions) and rerun "
                f"the same command: it resumes from the newest complete checkpoint in {path.parent}") from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class UnusableCheckpoint(Exception):
    """A checkpoint that must not be loaded; ``str()`` is the reason, one phrase."""


class WrongModel(UnusableCheckpoint):
    """A sound checkpoint whose tensors do not fit this model (another model's, or other sizes)."""


def checksum_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_digests(path: Path, digests: list[str]) -> None:
    text = "".join(f"{d}\n" for d in dict.fromkeys(digests)).encode()
    atomic_write(checksum_path(path), lambda f: f.write(text))


def listed_digests(path: Path) -> list[str] | None:
    """The digests the sidecar accepts for ``path``; None when it has no sidecar."""
    try:
        return checksum_path(path).read_text().split()
    except FileNotFoundError:
        return None


def verify_checksum(path: Path) -> bool:
    """True when ``path`` matches its sidecar, False when it has none (unverified: an older lra_bench, or a file
    from elsewhere); raises ``UnusableCheckpoint`` when the bytes match no listed digest."""
    digests = listed_digests(path)
    if digests is None:
        return False
    if not Path(path).is_file():
        raise UnusableCheckpoint("missing")
    if file_digest(path) not in digests:
        raise UnusableCheckpoint(f"fails its checksum ({checksum_path(path).name}): its bytes changed after it was written")
    return True


def save_checksummed(checkpoint: dict[str, Any], path: Path) -> None:
    """``torch.save`` atomically, with the checksum sidecar updated around the rename (see the module docstring)."""
    def write(f) -> None:
        torch.save(checkpoint, f)
        fault_point("checkpoint_write", checkpoint.get("global_step"))

    def before_replace(tmp: Path) -> None:
        new = file_digest(tmp)
        written[0] = new
        _write_digests(path, [new, *(listed_digests(path) or [])[:1]])

    written = [""]
    atomic_write(path, write, before_replace)
    _write_digests(path, [written[0]])


def _shape_mismatch(saved: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> str | None:
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    wrong = [k for k in expected if k in saved and tuple(saved[k].shape) != expected[k]]
    if not (missing or extra or wrong):
        return None
    if wrong:
        k = wrong[0]
        first = f"{k} is {tuple(saved[k].shape)} in the file, {expected[k]} in this model"
    else:
        first = f"{(missing or extra)[0]} is {'missing from the file' if missing else 'not in this model'}"
    more = len(missing) + len(extra) + len(wrong) - 1
    return f"another model's weights: {first}" + (f" (and {more} more tensors differ)" if more else "")


def inspect_checkpoint(path: Path, expected_shapes: dict[str, tuple[int, ...]] | None = None,
                       require_checksum: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped (nothing is copied into a model), after every check that can be made
    before loading it: its checksum, that it is a checkpoint with a step, and (``expected_shapes``: the model's
    ``state_dict`` shapes) that its weights fit the model. Raises ``UnusableCheckpoint`` naming what is wrong.
    ``require_checksum=False`` (a ``ckpt_path=`` from elsewhere) accepts a file without a sidecar."""
    path = Path(path)
    if not path.is_file():
        raise UnusableCheckpoint("missing")
    size = path.stat().st_size
    if size == 0:
        raise UnusableCheckpoint("0 bytes")
    if not verify_checksum(path) and require_checksum:
        raise UnusableCheckpoint(f"no checksum ({checksum_path(path).name} is missing)")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # truncated (killed while writing), or not a torch file
        raise UnusableCheckpoint(f"{size:,} bytes, not a readable checkpoint ({type(e).__name__})") from e
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("global_step"), int):
        raise UnusableCheckpoint("not a Lightning checkpoint (no global_step)")
    if expected_shapes is not None:
        check_fits(checkpoint, expected_shapes)
    return checkpoint


def check_fits(checkpoint: dict[str, Any], expected_shapes: dict[str, tuple[int, ...]]) -> None:
    """Raises ``WrongModel`` when the checkpoint's tensors are not the model's (names and shapes)."""
    problem = _shape_mismatch(checkpoint.get("state_dict") or {}, expected_shapes)
    if problem:
        raise WrongModel(problem)


def model_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """What ``inspect_checkpoint`` compares a checkpoint's ``state_dict`` with."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin (conf/trainer/default.yaml): atomic, checksummed writes; checked loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        save_checksummed(checkpoint, Path(path))

    def load_checkpoint(self, path: str | os.PathLike, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            verify_checksum(Path(path))
        except UnusableCheckpoint as e:  # the callers chose a checked file; one that changed since is never loaded
            raise RunStorageError(f"{path}: {e}. Rerun the same command: it resumes from the newest checkpoint that "
                                  "passes its checks") from e
        return super().load_checkpoint(path, *args, **kwargs)

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        super().remove_checkpoint(path)
        checksum_path(Path(path)).unlink(missing_ok=True)


class BetweenBatchesCheckpoint(ModelCheckpoint):
    """The periodic checkpoint (``every_n_train_steps``), written between two batches rather than at the end of the
    step that makes it due.

    Lightning writes it in ``on_train_batch_end``: before that step's validation, and before the step's own metrics
    reach the loggers. A kill inside that validation then resumed from a checkpoint whose validation never runs again
    (its CSV row, a best checkpoint and ``val/acc_best`` lost for good). Written at the start of the next batch,
    after any validation and logging of the step, it holds everything the step did; a kill before it resumes from
    the checkpoint before, and redoes the step and its validation.

    The one it replaces is kept as ``<name>-previous.ckpt``: when the weights of the newest one give a non-finite loss,
    the NaN advice names the previous one, which held weights whose loss was finite."""

    _due = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0:
            self._due = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._write_due(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the last step's checkpoint has no next batch to wait for: written when fit ends, so a kill between fit and
        # the end of the test resumes with nothing left to train (Lightning's last.ckpt follows only improvements).
        # Not when the time limit cut the run: Lightning has closed the epoch by then, so a checkpoint written now
        # would resume at the next epoch; a longer-time rerun goes on from the last between-batches one
        # (stopping.time_cut_resume_point)
        from lra_bench.training.stopping import cut_by_time_limit

        if cut_by_time_limit(trainer):
            self._due = False
            return
        self._write_due(trainer, pl_module)

    def _write_due(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due:
            return
        self._due = False
        if not self._should_skip_saving_checkpoint(trainer) and trainer.is_global_zero and self.dirpath and self.filename:
            current = Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"
            if current.is_file():  # the checkpoint first, then its checksum: a kill between loses only the copy
                previous = current.with_name(f"{self.filename}-previous{self.FILE_EXTENSION}")
                os.replace(current, previous)
                if checksum_path(current).is_file():
                    os.replace(checksum_path(current), checksum_path(previous))
        super().on_train_batch_end(trainer, pl_module, None, None, 0)
