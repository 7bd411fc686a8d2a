"""Preprocessed splits cached once as memory-mapped Arrow files, keyed by every preprocessing option.

Layout: ``<cache_dir>/<task>-<key>/`` with each split's files plus ``meta.json``. The key is a hash of
the options (which include the source files' size and mtime), so changing an option or the source
data builds a new cache and never reuses a stale one. A cache is built in a temporary folder and
renamed into place, and ``meta.json`` (with each file's size) is its completion marker; a file lock
keeps two processes from building the same cache at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from filelock import FileLock

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the cached layout changes


def cache_key(options: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable options."""
    blob = json.dumps({"format": FORMAT_VERSION, **options}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_identity(path: Path) -> dict[str, Any]:
    """What identifies a source file's content cheaply: resolved path, size and mtime."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class SplitCache:
    """The cache folder of one task under one set of options.

    Each split is written by ``write_split(split, folder) -> stats`` as whatever files the task needs
    (``<split>.arrow`` for token rows, ``<split>.npy`` memory maps for images); ``meta.json`` records every
    file's size and is written last.
    """

    def __init__(self, cache_dir: str | Path, task: str, options: dict[str, Any], splits: Iterable[str]):
        self.options = options
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

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text())

    def build(self, write_split: Callable[[str, Path], dict[str, Any]]) -> dict[str, Any]:
        """Build every split unless a complete cache exists; another process building it is waited for."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir) + ".lock"):
            if self.is_complete():
                return self.meta()
            if self.dir.exists():
                log.warning("cache %s is incomplete or stale: rebuilding it", self.dir)
                shutil.rmtree(self.dir)
            tmp = self.dir.with_name(self.dir.name + f".tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                stats = {split: write_split(split, tmp) for split in self.splits}
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"options": self.options, "stats": stats, "sizes": sizes}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
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
