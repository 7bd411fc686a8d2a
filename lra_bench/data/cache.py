"""Preprocessed splits cached once as memory-mapped Arrow files, keyed by everything they were built from.

Layout: ``<cache_dir>/<task>-<key>/`` with each split's files plus ``meta.json``. The key is a hash of every
preprocessing option and of the sources' content, not of where they lie (``source_identity``: for a file up to
``HASH_LIMIT`` its size and SHA-256, a larger one its size, mtime and ctime; for a folder of many files the count and
a digest of every file's relative name, size, mtime and ctime; ``cache_key`` leaves the paths out), so an edited,
added or removed source file builds a new cache, and a renamed or moved data root keeps its cache. When a new
cache is built for sources an older cache of the task was built from (the same paths), the log names what changed;
for sources no cache was built from yet, it says it is building one.

A cache is built in a temporary folder and renamed into place; ``meta.json`` (every file's size and CRC-32) is its
completion marker and is checked when the cache is opened, so a cache damaged after it was written (truncated,
overwritten in place) is rebuilt, never read. A complete, undamaged cache is read without writing anything (a
read-only data root works); a build takes a file lock, so two processes never build the same cache at once, and
temporary folders left by processes that died are removed. A cache folder that cannot be written stops with one
line naming it and ``paths.cache_dir``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from filelock import FileLock

from lra_bench.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the cached layout changes
HASH_LIMIT = 512 * 2**20  # files up to this size are keyed by their content hash too (ListOps, CIFAR, metadata)
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)  # a cache folder we cannot build in
IDENTITY_KEYS = ("size", "mtime_ns", "ctime_ns", "sha256", "files", "bytes", "listing")


def cache_key(options: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable options, without the sources' locations (``location_free``)."""
    blob = json.dumps({"format": FORMAT_VERSION, **location_free(options)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def location_free(value: Any) -> Any:
    """The options as the key sees them: a source's ``path`` is dropped wherever its identity is recorded beside it
    (``size``/``files`` of ``source_identity``, or an ``identity`` entry), and a file's times wherever its content
    hash is; a hub id (a ``path`` with nothing beside it) stays."""
    if isinstance(value, dict):
        identified = any(k in value for k in ("size", "files", "identity"))
        hashed = "sha256" in value
        return {k: location_free(v) for k, v in value.items()
                if not (identified and k == "path") and not (hashed and k in ("mtime_ns", "ctime_ns"))}
    if isinstance(value, (list, tuple)):
        return [location_free(v) for v in value]
    return value


def source_paths(options: dict[str, Any]) -> set[str]:
    """Every source location named in the options (the ``path`` entries)."""
    return {str(v) for k, v in _leaves(options).items() if k == "path" or k.endswith(".path")}


def _blocks(path: Path) -> Iterator[bytes]:
    """A file's bytes in 8 MiB blocks (checksums of files too large to read at once)."""
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(8 * 2**20), b"")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for block in _blocks(path):
        digest.update(block)
    return digest.hexdigest()


def file_crc32(path: Path) -> int:
    crc = 0
    for block in _blocks(path):
        crc = zlib.crc32(block, crc)
    return crc


def source_identity(path: Path, patterns: Iterable[str] = ("**/*",)) -> dict[str, Any]:
    """What a cache built from ``path`` depends on (the path itself is recorded to name it in logs, not keyed).

    A file: resolved path, size, mtime, ctime and (up to HASH_LIMIT) the SHA-256 of its content. A folder: the count
    and total size of the files matching ``patterns`` below it and one digest over their relative names, sizes,
    mtimes and ctimes (an added, removed, renamed or rewritten file changes it; 200K Pathfinder PNGs take ~1 s)."""
    path = Path(path)
    st = path.stat()
    if not path.is_dir():
        out = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
        if st.st_size <= HASH_LIMIT:
            out["sha256"] = file_sha256(path)
        return out
    lines, total = [], 0
    for pattern in patterns:
        for f in path.glob(pattern):
            if f.is_file():
                s = f.stat()
                total += s.st_size
                lines.append(f"{f.relative_to(path).as_posix()}\t{s.st_size}\t{s.st_mtime_ns}\t{s.st_ctime_ns}")
    lines.sort()
    return {"path": str(path.resolve()), "files": len(lines), "bytes": total,
            "listing": hashlib.sha256("\n".join(lines).encode()).hexdigest()}


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human lines for what differs between two caches' options: which source file changed and how, which option."""
    a, b = _leaves(old), _leaves(new)
    changed: dict[str, list[str]] = {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        head, _, leaf = key.rpartition(".")
        if leaf in IDENTITY_KEYS and head:
            source = b.get(f"{head}.path") or a.get(f"{head}.path") or head
            changed.setdefault(str(source), []).append(leaf)
        elif leaf != "path":
            changed.setdefault(f"option {key}", []).append(f"{a.get(key)!r} -> {b.get(key)!r}")
    lines = []
    for what, how in changed.items():
        if what.startswith("option "):
            lines.append(f"{what[7:]}: {how[0]}")
        else:
            kinds = {"sha256": "content", "listing": "files added, removed or rewritten", "files": "file count",
                     "size": "size", "bytes": "size", "mtime_ns": "modification time", "ctime_ns": "change time"}
            order = ("sha256", "listing", "files", "size", "bytes", "mtime_ns", "ctime_ns")
            how = sorted(how, key=lambda h: order.index(h) if h in order else len(order))
            lines.append(f"{what}: {', '.join(dict.fromkeys(kinds.get(h, h) for h in how))} changed")
    return lines


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SplitCache:
    """The cache folder of one task under one set of options.

    Each split is written by ``write_split(split, folder) -> stats`` as whatever files the task needs
    (``<split>.arrow`` for token rows, ``<split>.npy`` memory maps for images); ``meta.json`` records every
    file's size and is written last.
    """

    def __init__(self, cache_dir: str | Path, task: str, options: dict[str, Any], splits: Iterable[str]):
        self.options = options
        self.task = task
        self.splits = tuple(splits)
        self.dir = Path(cache_dir) / f"{task}-{cache_key(options)}"

    def path(self, split: str, suffix: str = ".arrow") -> Path:
        return self.dir / f"{split}{suffix}"

    @property
    def meta_path(self) -> Path:
        return self.dir / "meta.json"

    def is_complete(self) -> bool:
        """True when meta.json exists and every file it lists has the size it recorded."""
        try:
            meta = json.loads(self.meta_path.read_text())
            sizes = meta["sizes"]
        except (OSError, ValueError, KeyError):
            return False
        if not sizes:
            return False
        for name, size in sizes.items():
            p = self.dir / name
            if not p.is_file() or p.stat().st_size != size:
                return False
        return True

    def damaged_files(self) -> list[str]:
        """Files whose CRC-32 is not the one recorded when the cache was written (changed in place since)."""
        crcs = self.meta().get("crc32", {})
        return [name for name, crc in crcs.items() if file_crc32(self.dir / name) != crc]

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def _remove_dead_builds(self) -> None:
        """Temporary build folders of processes that no longer run (killed mid-build) are removed."""
        for tmp in self.dir.parent.glob(f"{self.task}-*.tmp-*"):
            match = re.search(r"\.tmp-(\d+)$", tmp.name)
            if match and tmp.is_dir() and not _pid_alive(int(match.group(1))):
                log.info("removing %s, left by a process that died while building it", tmp)
                shutil.rmtree(tmp, ignore_errors=True)

    def _log_why(self) -> None:
        """Name what changed since the newest other cache of this task built from the same source paths (a source
        file's content, an option); sources no cache was built from yet are just being built."""
        task = self.task
        paths = source_paths(self.options)
        others = []
        for meta in self.dir.parent.glob(f"{task}-*/meta.json"):
            if meta.parent != self.dir:
                try:
                    options = json.loads(meta.read_text()).get("options", {})
                except (OSError, ValueError):
                    continue
                if source_paths(options) == paths:
                    others.append((meta.stat().st_mtime, options))
        if not others:
            log.info("building the %s cache %s (no earlier cache of these sources)", task, self.dir)
            return
        previous = max(others, key=lambda o: o[0])[1]
        changes = describe_changes(previous, self.options)
        log.warning("building a new %s cache %s: %s", task, self.dir,
                    "; ".join(changes) if changes else "its preprocessing differs from the last cache's")

    def build(self, write_split: Callable[[str, Path], dict[str, Any]], verify: bool = False) -> dict[str, Any]:
        """Build every split unless a complete (and, with ``verify``, undamaged) cache exists; another process
        building it is waited for. A usable cache is read without the lock (nothing written: a read-only data root
        works); a cache folder that cannot be written stops with one line naming it."""
        if self.is_complete() and not (verify and self.damaged_files()):
            return self.meta()
        try:
            return self._build_locked(write_split, verify)
        except OSError as e:
            # pyarrow's write errors carry no errno, only the system's message
            code = e.errno or next((c for c in UNWRITABLE if os.strerror(c) in str(e)), None)
            if code not in UNWRITABLE:
                raise
            raise DataError(f"cannot write the {self.task} preprocessing cache in {self.dir.parent}: {os.strerror(code)}. "
                            "Set paths.cache_dir=<a writable folder with free space> (the data root itself may stay "
                            "read-only)") from e

    def _build_locked(self, write_split: Callable[[str, Path], dict[str, Any]], verify: bool) -> dict[str, Any]:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir) + ".lock"):
            self._remove_dead_builds()
            if self.is_complete():
                damaged = self.damaged_files() if verify else []
                if not damaged:
                    return self.meta()
                log.warning("cache %s: %s changed after the cache was written (checksum mismatch): rebuilding it",
                            self.dir, ", ".join(damaged))
            elif self.dir.exists():
                log.warning("cache %s is incomplete (a build was interrupted or a file was truncated): rebuilding it", self.dir)
            else:
                self._log_why()
            if self.dir.exists():
                shutil.rmtree(self.dir)
            tmp = self.dir.with_name(self.dir.name + f".tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                stats = {split: write_split(split, tmp) for split in self.splits}
                files = [p for p in sorted(tmp.iterdir()) if p.is_file()]
                meta = {"options": self.options, "stats": stats, "sizes": {p.name: p.stat().st_size for p in files},
                        "crc32": {p.name: file_crc32(p) for p in files}}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            os.replace(tmp, self.dir)
            return meta


class ArrowRowWriter:
    """Buffers rows of token ids and labels and writes them to an Arrow file through ``datasets``.

    Columns: ``input_ids`` (list of ``dtype``), ``length`` (int32), ``label`` (int64), and for paired
    tasks ``input_ids2``/``length2``.
    """

    def __init__(self, path: Path, dtype: str = "uint8", paired: bool = False, rows_per_batch: int = 4096):
        from datasets import Features, List, Value
        from datasets.arrow_writer import ArrowWriter

        self.dtype = np.dtype(dtype)
        self.paired = paired
        self.rows_per_batch = rows_per_batch
        columns = {"input_ids": List(Value(dtype)), "length": Value("int32")}
        if paired:
            columns |= {"input_ids2": List(Value(dtype)), "length2": Value("int32")}
        columns["label"] = Value("int64")
        self._writer = ArrowWriter(features=Features(columns), path=str(path))
        self._rows: list[tuple] = []
        self.n_rows = 0

    def add(self, ids: np.ndarray, label: int, ids2: np.ndarray | None = None) -> None:
        self._rows.append((ids, label, ids2))
        if len(self._rows) >= self.rows_per_batch:
            self._flush()

    def _list_array(self, seqs: list[np.ndarray]) -> tuple[pa.Array, np.ndarray]:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int32, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(seqs).astype(self.dtype, copy=False) if seqs else np.zeros(0, self.dtype)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)), lengths

    def _flush(self) -> None:
        if not self._rows:
            return
        ids, lengths = self._list_array([r[0] for r in self._rows])
        table = {"input_ids": ids, "length": pa.array(lengths)}
        if self.paired:
            ids2, lengths2 = self._list_array([r[2] for r in self._rows])
            table |= {"input_ids2": ids2, "length2": pa.array(lengths2)}
        table["label"] = pa.array([r[1] for r in self._rows], pa.int64())
        self._writer.write_table(pa.table(table))
        self.n_rows += len(self._rows)
        self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.finalize()
        self._writer.close()

    def __enter__(self) -> ArrowRowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
