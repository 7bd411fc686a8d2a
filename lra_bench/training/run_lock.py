"""One run folder, one writer: a lock file holding the writer's pid, taken for the whole run.

Two identical commands started together (or one while the first runs) would write the same folder: CSV rows
twice, ``-v1`` checkpoints, and the second run's result.json over the first's. The second refuses with one line
naming the running process. The lock is an OS advisory lock (``flock``) on ``<run>/.lock``: the kernel releases it
when its process dies however it dies, so a stale lock file of a dead process is simply taken over. A clean exit
empties the holder record before unlocking, so only a process that died holding the folder is named as taken over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path

from lra_bench.errors import RunFolderBusy

log = logging.getLogger(__name__)

_HELD: set[int] = set()  # lock fds this process holds


def _close_held_in_child() -> None:
    """A forked child (a DataLoader worker) shares the lock's open file: while it lived on after its parent was
    killed, the rerun found the folder busy. Closing the copy releases nothing for the parent (flock is released
    when every copy is closed), and lets the lock go with the parent."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


RUN_ADVICE = ("One run folder has one writer: wait for that run to finish (then rerun to see its result), stop it, or "
              "change an override to get another folder")


class RunLock:
    """``advice``: what the refusal tells the user to do (the data generators lock their output folder too)."""

    def __init__(self, run_dir: Path, advice: str = RUN_ADVICE):
        self.path = Path(run_dir) / ".lock"
        self.advice = advice
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(fd)
            who = (f"pid {holder.get('pid')}, started {holder.get('started')}: {holder.get('command')}" if holder
                   else "another process")
            raise RunFolderBusy(f"{self.path.parent} is being written by {who}. {self.advice}") from None
        previous = self.holder()
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.info("taking over %s from pid %s, which is no longer running", self.path, previous["pid"])
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        _HELD.add(fd)
        return self

    def holder(self) -> dict:
        """The record the lock's last taker wrote (pid, start time, command); {} when there is none."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def held_elsewhere(self) -> dict | None:
        """The holder's record when another process holds this folder's lock now, else None (nothing is taken)."""
        if not self.path.is_file():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.holder() or {"pid": "?"}
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            # emptied while still held (never unlinked: a process waiting on the old file would lock a ghost)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
