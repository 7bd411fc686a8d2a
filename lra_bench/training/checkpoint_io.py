"""Checkpoints written atomically in their own folder: a temp file beside the target, fsync, rename.

Lightning's default writer stages through fsspec, whose temp file lives in ``TMPDIR``: on another filesystem
(tmpfs) the final move is a copy, and a process killed during it leaves a 0-byte checkpoint in place of the good
one. Here the temp file is in the checkpoint's folder, so ``os.replace`` is atomic: a checkpoint is either the
old one or the complete new one. A failed write (disk full) removes its temp file and names the folder.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from lra_bench.errors import RunStorageError


def atomic_write(path: Path, write) -> None:
    """``write(file)`` into ``<path>.tmp-<pid>`` in the same folder, flush, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
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


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))
