"""Pathfinder and Path-X: ``pathfinder<R>/<difficulty>/{metadata/<k>.npy, imgs/<k>/sample_<i>.png}``.

Pathfinder is ``pathfinder32/curv_contour_length_14``, Path-X ``pathfinder128/curv_contour_length_14``
(long-range-arena#11). The release's ``metadata/<k>.npy`` files are plain text despite the extension
(one line per image: ``imgs/<k> sample_<i>.png <i> <label> ...``); binary ``.npy`` files (what the
original generator's ``np.save`` would write) are read too. Metadata files are taken in order of their
integer stem. Label 1 = the two markers lie on one path.

Images with zero bytes (the release holds one, ``pathfinder32/curv_baseline/imgs/0/sample_172.png``)
are skipped, counted and logged. Every other image must be an 8-bit grayscale R x R PNG.

Splits (80/10/10): ``split: random`` is ``torch.utils.data.random_split`` with seed 42 over the kept
images in metadata order (S4, Mega); ``split: ordered`` cuts them in order (LRA's ``[:80%]``,
``[80%:90%]``, ``[90%:]``; LRA's TFDS record order itself is not reproducible). Pixels are decoded
once, in parallel, into a uint8 memory-mapped cache (Path-X: 200K x 16384 bytes = 3.3 GB, never floats).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lra_bench.data.base import SPLITS, ImageArrayDataset, LRADataModule
from lra_bench.data.cache import source_identity
from lra_bench.data.locate import find_dataset_dir
from lra_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DIFFICULTIES = ("curv_baseline", "curv_contour_length_9", "curv_contour_length_14")
RESOLUTIONS = (32, 64, 128, 256)


def fill_hint(data_dir: Path, resolution: int, difficulty: str) -> str:
    return (
        f"generate it with `python -m data_prep.pathfinder --out-dir {data_dir} --resolution {resolution} "
        f"--difficulty {difficulty} --num-images 200000` (or `make data TASK=pathfinder`/`TASK=pathx`), "
        "or unpack the LRA release under the data root"
    )


def read_metadata(path: Path) -> list[list[str]]:
    """Rows of one metadata file (text, as released, or a binary .npy of strings)."""
    raw = path.read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}: a binary .npy that is not an array of strings ({e})") from e
        return [[str(v) for v in row] for row in np.atleast_2d(arr)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: metadata is neither text nor a NumPy array ({e})") from e
    return [line.split() for line in text.splitlines() if line.strip()]


def decode_png(path: str, resolution: int) -> np.ndarray:
    """One 8-bit grayscale R x R PNG as a flat uint8 array, or a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode != "L":
                raise DataError(f"{path}: mode {im.mode}, expected an 8-bit grayscale (L) PNG")
            if im.size != (resolution, resolution):
                raise DataError(f"{path}: size {im.size[0]}x{im.size[1]}, expected {resolution}x{resolution}")
            return np.asarray(im, dtype=np.uint8).reshape(-1)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:  # truncated or not a PNG
        raise DataError(f"{path}: cannot decode the PNG ({e}); the file is truncated or corrupt: regenerate or re-download it") from e


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, resolution = args
    return np.stack([decode_png(p, resolution) for p in paths]) if paths else np.zeros((0, resolution**2), np.uint8)


class PathfinderDataModule(LRADataModule):
    """Pathfinder (R = 32) or Path-X (R = 128); see the module docstring."""

    task_name = "pathfinder"

    def __init__(self, *args: Any, resolution: int = 32, difficulty: str = "curv_contour_length_14",
                 split: str = "random", split_seed: int = 42, decode_workers: int = 2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if resolution not in RESOLUTIONS:
            raise ConfigError(f"task.datamodule.resolution must be one of {RESOLUTIONS}, got {resolution}")
        if difficulty not in DIFFICULTIES:
            raise ConfigError(f"task.datamodule.difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        if split not in ("random", "ordered"):
            raise ConfigError(f"task.datamodule.split must be random (seed 42, S4/Mega) or ordered (LRA), got {split!r}")
        self.resolution, self.difficulty, self.split, self.split_seed = resolution, difficulty, split, split_seed
        self.decode_workers = max(1, decode_workers)
        self.task_name = "pathfinder" if resolution != 128 else "pathx"
        self._root: Path | None = None
        self._plan: dict[str, tuple[list[str], np.ndarray]] | None = None

    @property
    def root(self) -> Path:
        """``pathfinder<R>/<difficulty>`` with its metadata/ folder."""
        if self._root is None:
            hint = fill_hint(self.data_dir, self.resolution, self.difficulty)
            base = find_dataset_dir(self.data_dir, f"pathfinder{self.resolution}", [], hint)
            root = base / self.difficulty
            if not (root / "metadata").is_dir():
                raise DataError(f"{root}/metadata/ is missing (found {base}, but not this difficulty): {hint}")
            self._root = root
        return self._root

    def metadata_files(self) -> list[Path]:
        files = []
        for p in (self.root / "metadata").iterdir():
            if p.suffix == ".npy" and p.stem.isdigit():
                files.append(p)
        if not files:
            raise DataError(f"{self.root}/metadata/ holds no <k>.npy files: {fill_hint(self.data_dir, self.resolution, self.difficulty)}")
        return sorted(files, key=lambda p: int(p.stem))

    def cache_options(self) -> dict[str, Any]:
        return {
            "task": "pathfinder", "resolution": self.resolution, "difficulty": self.difficulty, "split": self.split,
            "split_seed": self.split_seed, "metadata": [source_identity(p) for p in self.metadata_files()],
            # every image file (names, sizes, times): a PNG rewritten after caching builds a new cache
            "images": source_identity(self.root / "imgs", ("*/*.png",)) if (self.root / "imgs").is_dir() else None,
        }

    def _entries(self) -> tuple[list[str], np.ndarray, int]:
        """Image paths and labels in metadata order, without the empty images (and their count)."""
        paths, labels, empty = [], [], 0
        for meta in self.metadata_files():
            for line_no, row in enumerate(read_metadata(meta), start=1):
                if len(row) < 4:
                    raise DataError(f"{meta}:{line_no}: expected at least 4 fields (folder, file, index, label), got {len(row)}")
                if row[3] not in ("0", "1"):
                    raise DataError(f"{meta}:{line_no}: label {row[3]!r} is not 0 or 1")
                path = self.root / row[0] / row[1]
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    raise DataError(f"{meta}:{line_no}: image {path} is missing; the data set is incomplete: regenerate or re-download it") from None
                if size == 0:
                    empty += 1
                    continue
                paths.append(str(path))
                labels.append(int(row[3]))
        if not paths:
            raise DataError(f"{self.root}: no images listed in metadata/")
        return paths, np.asarray(labels, dtype=np.int64), empty

    def _split(self, n: int) -> dict[str, np.ndarray]:
        n_val = n_test = int(0.1 * n)
        n_train = n - n_val - n_test
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).numpy()
                 if self.split == "random" else np.arange(n))
        return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}

    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        if self._plan is None:
            paths, labels, empty = self._entries()
            if empty:
                log.warning("%s: skipped %d empty image file(s)", self.root, empty)
            self._empty = empty
            self._plan = {s: ([paths[i] for i in idx], labels[idx]) for s, idx in self._split(len(paths)).items()}
        paths, labels = self._plan[split]
        images = np.lib.format.open_memmap(folder / f"{split}.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(paths), self.resolution**2))
        step = 256
        chunks = [(paths[i : i + step], self.resolution) for i in range(0, len(paths), step)]
        if self.decode_workers > 1 and len(chunks) > 1:
            with mp.get_context("fork").Pool(self.decode_workers) as pool:
                for i, block in enumerate(pool.imap(_decode_chunk, chunks)):
                    images[i * step : i * step + len(block)] = block
        else:
            for i, chunk in enumerate(chunks):
                images[i * step : i * step + len(chunk[0])] = _decode_chunk(chunk)
        images.flush()
        del images
        np.save(folder / f"{split}_labels.npy", labels)
        stats = {"n": len(labels), "label_counts": np.bincount(labels, minlength=2).tolist(), "empty_skipped": self._empty}
        if split == SPLITS[-1]:
            self._plan = None
        return stats

    def open_split(self, split: str) -> ImageArrayDataset:
        return ImageArrayDataset(self.cache.path(split, ".npy"), self.cache.path(f"{split}_labels", ".npy"))
