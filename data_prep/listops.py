"""ListOps generator: the LRA algorithm, deterministic for a seed, fast and lean.

Writes ``OUT/basic_{train,val,test}.tsv`` exactly as the LRA release does (header ``Source\\tTarget``,
fully parenthesised sources, ``csv.writer(delimiter='\\t')`` so lines end in ``\\r\\n``).

The tree distribution is the one of google-research/long-range-arena ``lra_benchmarks/data/listops.py``:
a node below ``max_depth`` is a digit leaf with probability 0.75, otherwise an operator from
``[MIN [MAX [MED [SM`` with 2..``max_args`` children; nodes at ``max_depth`` are leaves; a tree is
kept when ``min_length < length < max_length`` (length = leaves + 2 per operator) and its string was
not seen before. Values: MIN, MAX, MED = int(median) (floor of the middle pair's mean), SM = sum % 10.

What differs from the original, and why:
- Seeded: work is cut into shards of ``SHARD_ROWS`` accepted rows, shard ``i`` draws from
  ``random.Random(f"{seed}:{i}")``; shards are merged in order, so the files are byte-identical for
  a seed whatever the number of workers.
- The string and the value are built while the tree grows and a tree is abandoned as soon as it
  reaches ``max_length`` (it would be rejected anyway); no tuple trees are kept.
- Rows stream to disk and dedup keeps a 16-byte digest per row, so memory stays flat
  (the original keeps every tree: about 5.9 GB for the full split).
- One uniform draw decides leaf vs operator *and* picks the digit or operator from the same draw
  (the remaining uniform mass is uniform over the choices), which leaves the distribution unchanged.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import multiprocessing as mp
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lra_bench.errors import RunFolderBusy
from lra_bench.training.run_lock import RunLock

GENERATOR_ADVICE = "Wait for that generator to finish or stop it, or write to another --out-dir"


@contextmanager
def generator_lock(folder: Path) -> Iterator[None]:
    """One generator per output folder (``RunFolderBusy`` names the other); the lock file is removed when done,
    before the lock is released, so the folder ends holding only the data."""
    lock = RunLock(folder, advice=GENERATOR_ADVICE).acquire()
    try:
        yield
    finally:
        lock.path.unlink(missing_ok=True)
        lock.release()

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
LEAF_P = 0.75  # probability that a node below max_depth is a digit (LRA: r > VALUE_P = 0.25)
SPLITS = ("train", "val", "test")
SHARD_ROWS = 500  # accepted rows per shard: the unit of seeding, parallel work and progress


@dataclass(frozen=True)
class ListOpsSpec:
    """Every option that changes the generated rows."""

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000

    def validate(self) -> None:
        if self.max_depth < 2:
            raise ValueError(f"--max-depth must be >= 2 (got {self.max_depth}): depth 1 is a bare digit")
        if self.max_args < 2:
            raise ValueError(f"--max-args must be >= 2 (got {self.max_args})")
        if self.max_length - self.min_length < 2:
            raise ValueError(
                f"--min-length {self.min_length} and --max-length {self.max_length} leave no length L with "
                "min_length < L < max_length; widen the range"
            )
        if self.min_length < 0:
            raise ValueError(f"--min-length must be >= 0 (got {self.min_length})")


class _TooLong(Exception):
    """Raised inside the recursion to abandon a tree that already reached max_length."""


def _median_floor(values: list[int]) -> int:
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) // 2


def _apply(op: int, values: list[int]) -> int:
    if op == 0:
        return min(values)
    if op == 1:
        return max(values)
    if op == 2:
        return _median_floor(values)
    return sum(values) % 10


class TreeSampler:
    """Draws ListOps trees for one spec, writing the source string and value as the tree grows."""

    def __init__(self, rng: random.Random, spec: ListOpsSpec):
        self.draw = rng.random
        self.spec = spec
        # String pieces, each starting with a space (dropped at the end). An operator with n
        # arguments is written "( ( ... ( [OP a1 ) a2 ) ... an ) ] )" with n + 1 "(".
        self.open_piece = {
            (op, n): " (" * (n + 1) + " " + OPERATORS[op] for op in range(4) for n in range(2, spec.max_args + 1)
        }
        self.leaf_piece = tuple(f" {d} )" for d in range(10))

    def sample(self) -> tuple[str, int] | None:
        """Draw one tree; return (source, value) if it passes the length filter, else None."""
        draw, spec = self.draw, self.spec
        max_depth, max_args, max_length = spec.max_depth, spec.max_args, spec.max_length
        open_piece, leaf_piece = self.open_piece, self.leaf_piece
        op_p = 1.0 - LEAF_P
        pieces: list[str] = []
        put = pieces.append
        length = [0]  # counted length so far: leaves + 2 per operator

        def grow_operator(depth: int, u: float) -> int:
            """Write an operator drawn with uniform u in [0, op_p) and its subtree; return its value."""
            op = min(int(u / op_p * 4), 3)
            n = 2 + int(draw() * (max_args - 1))
            put(open_piece[op, n])
            values = []
            leaves = 0
            child_depth = depth + 1
            for _ in range(n):
                r = draw()
                if child_depth >= max_depth:  # nodes at max_depth are forced leaves
                    d = int(r * 10)
                elif r >= op_p:
                    d = min(int((r - op_p) / LEAF_P * 10), 9)
                else:
                    values.append(grow_operator(child_depth, r))
                    put(" )")
                    continue
                put(leaf_piece[d])
                values.append(d)
                leaves += 1
            put(" ] )")
            length[0] += leaves + 2
            if length[0] >= max_length:
                raise _TooLong
            return _apply(op, values)

        r = draw()
        if r >= op_p:  # a bare digit, length 1: kept only if min_length < 1
            if spec.min_length < 1 < max_length:
                d = min(int((r - op_p) / LEAF_P * 10), 9)
                return str(d), d
            return None
        try:
            value = grow_operator(1, r)
        except _TooLong:
            return None
        if not spec.min_length < length[0] < max_length:
            return None
        return "".join(pieces)[1:], value


def generate_shard(args: tuple[int, int, ListOpsSpec]) -> list[tuple[str, int]]:
    """All accepted rows of shard ``index`` (``SHARD_ROWS`` of them), deterministic in (seed, index)."""
    seed, index, spec = args
    sampler = TreeSampler(random.Random(f"{seed}:{index}"), spec)
    rows: list[tuple[str, int]] = []
    while len(rows) < SHARD_ROWS:
        row = sampler.sample()
        if row is not None:
            rows.append(row)
    return rows


def _shards(seed: int, spec: ListOpsSpec, workers: int, needed_rows: int) -> Iterator[list[tuple[str, int]]]:
    """Shards in index order, produced by ``workers`` processes, until the caller stops iterating."""
    next_index = 0
    pool = mp.get_context("fork" if sys.platform != "win32" else "spawn").Pool(workers) if workers > 1 else None
    try:
        while True:
            # Ask for what is still needed (+1 shard of slack for dedup), never an unbounded queue.
            count = max(1, -(-needed_rows // SHARD_ROWS) + 1)
            jobs = [(seed, i, spec) for i in range(next_index, next_index + count)]
            next_index += count
            results = pool.imap(generate_shard, jobs) if pool else map(generate_shard, jobs)
            for shard in results:
                yield shard
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def generate(
    out_dir: str | os.PathLike,
    counts: dict[str, int],
    seed: int = 0,
    spec: ListOpsSpec = ListOpsSpec(),
    workers: int = 1,
    progress: bool = True,
    task: str = "basic",
) -> dict[str, Path]:
    """Write ``{out_dir}/{task}_{split}.tsv`` for the splits in ``counts``; return their paths.

    Files are written under a temporary name and renamed at the end, so an interrupted run never
    leaves a complete-looking but truncated split behind. The folder is locked while it is written: a second
    generator on the same folder stops with ``RunFolderBusy`` naming the first, never blending its rows in.
    """
    spec.validate()
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"--{split} must be >= 0 (got {n})")
    with generator_lock(Path(out_dir)):
        return _generate(Path(out_dir), counts, seed, spec, workers, progress, task)


def _generate(out: Path, counts: dict[str, int], seed: int, spec: ListOpsSpec, workers: int, progress: bool,
              task: str) -> dict[str, Path]:
    order = [s for s in SPLITS if counts.get(s, 0) > 0]
    total = sum(counts[s] for s in order)
    paths = {s: out / f"{task}_{s}.tsv" for s in counts}
    tmp_paths = {s: p.with_name(p.name + ".partial") for s, p in paths.items()}
    files = {s: open(tmp_paths[s], "w", newline="") for s in counts}
    writers = {s: csv.writer(f, delimiter="\t") for s, f in files.items()}
    for w in writers.values():
        w.writerow(["Source", "Target"])

    # Unique rows are dealt out in order: the first counts["train"] to train, then val, then test.
    targets = iter([(s, counts[s]) for s in order])
    seen: set[bytes] = set()
    written = 0
    bar = _progress(total) if progress and total else None
    shards = None
    try:
        split, left = next(targets, (None, 0))
        shards = _shards(seed, spec, workers, total) if split else None
        for shard in shards or ():
            for source, value in shard:
                key = hashlib.blake2b(source.encode(), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
                writers[split].writerow([source, value])
                written += 1
                left -= 1
                if left == 0:
                    split, left = next(targets, (None, 0))
                    if split is None:
                        break
            if bar:
                bar.update(written)
            if split is None:
                break
    finally:
        if shards is not None:
            shards.close()  # stops the worker pool
        for f in files.values():
            f.close()
        if bar:
            bar.close()
    for s in counts:
        os.replace(tmp_paths[s], paths[s])
    return paths


class _progress:
    """A small Rich progress bar (stderr) that degrades to nothing when Rich is missing."""

    def __init__(self, total: int):
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
        except ImportError:  # pragma: no cover - rich is a dependency
            self._p = None
            return
        from rich.console import Console

        self._p = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task("ListOps rows", total=total)

    def update(self, done: int) -> None:
        if self._p:
            self._p.update(self._task, completed=done)

    def close(self) -> None:
        if self._p:
            self._p.stop()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.listops",
        description="Generate ListOps in the LRA release format (basic_{train,val,test}.tsv).",
    )
    p.add_argument("--out-dir", required=True, help="folder to write basic_{train,val,test}.tsv into")
    p.add_argument("--train", type=int, default=96_000, help="train rows (default 96000)")
    p.add_argument("--val", type=int, default=2_000, help="val rows (default 2000)")
    p.add_argument("--test", type=int, default=2_000, help="test rows (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default: 2)")
    p.add_argument("--min-length", type=int, default=500, help="keep rows with length > this (default 500)")
    p.add_argument("--max-length", type=int, default=2000, help="keep rows with length < this (default 2000)")
    p.add_argument("--max-depth", type=int, default=10, help="maximum tree depth (default 10)")
    p.add_argument("--max-args", type=int, default=10, help="maximum arguments per operator (default 10)")
    p.add_argument("--task", default="basic", help="file prefix (default basic, as in the release)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = ListOpsSpec(args.max_depth, args.max_args, args.min_length, args.max_length)
    try:
        spec.validate()
    except ValueError as e:
        print(f"data_prep.listops: {e}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"data_prep.listops: --workers must be >= 1 (got {args.workers})", file=sys.stderr)
        return 2
    counts = {"train": args.train, "val": args.val, "test": args.test}
    start = time.perf_counter()
    try:
        paths = generate(args.out_dir, counts, args.seed, spec, args.workers, progress=not args.quiet, task=args.task)
    except RunFolderBusy as e:
        print(f"data_prep.listops: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(
        f"wrote {', '.join(f'{counts[s]} {s}' for s in counts)} rows to {Path(args.out_dir)} "
        f"({', '.join(p.name for p in paths.values())}) in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
