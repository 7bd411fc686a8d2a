"""Image (CIFAR-10 as 1024-pixel grayscale sequences): ``cifar-10-batches-py/`` or the hub's ``uoft-cs/cifar10``.

Grayscale is LRA's ``tf.image.rgb_to_grayscale`` on uint8: x / 255, weights 0.2989 / 0.5870 / 0.1140,
back to uint8 as floor(g * 255.5) (TF's ``convert_image_dtype``). Pixels are stored as uint8 in a
memory-mapped cache; the model reads them as tokens (vocab 256, LRA) or as normalised values
(``task.input: real`` with ``task.pixel_mean/std``: Mega 0.48 / 0.24, S4 122.6/255 / 61/255).

Splits: test = the 10K test batch. Validation: ``val_split: last`` takes the last 5K of train (LRA,
``train[90%:]``); ``random`` takes a 5K permutation slice seeded 42, exactly
``torch.utils.data.random_split(train, [45000, 5000], generator=manual_seed(42))`` (S4, Mega).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lra_bench.data.base import ImageArrayDataset, LRADataModule
from lra_bench.data.cache import source_identity
from lra_bench.data.locate import find_dataset_dir
from lra_bench.data.sources import load_hub_dataset
from lra_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
MANUAL_STEPS = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and unpack it under the data root "
    "(it makes cifar-10-batches-py/), or run `make data TASK=image` on a machine with a network"
)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) uint8 -> (n, 1024) uint8, as ``tf.image.rgb_to_grayscale`` does on uint8 images."""
    gray = (rgb.astype(np.float32) * np.float32(1.0 / 255.0)) @ GRAY_WEIGHTS
    return np.floor(gray * np.float32(255.5)).clip(0, 255).astype(np.uint8).reshape(len(rgb), -1)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: (n, 32, 32, 3) uint8 RGB and (n,) labels."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e}); the file is corrupt: {MANUAL_STEPS}") from e
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected data of shape (n, 3072) and n labels, got {data.shape} and {len(labels)}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class CIFAR10DataModule(LRADataModule):
    """Grayscale CIFAR-10 as pixel sequences; see the module docstring."""

    task_name = "image"

    def __init__(self, *args: Any, source: str = "auto", dirname: str = "cifar-10-batches-py",
                 hf_path: str = "uoft-cs/cifar10", val_split: str = "last", val_size: int = 5000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if source not in ("auto", "folder", "hub"):
            raise ConfigError(f"task.datamodule.source must be auto, folder or hub, got {source!r}")
        if val_split not in ("last", "random"):
            raise ConfigError(f"task.datamodule.val_split must be last (LRA) or random (S4/Mega), got {val_split!r}")
        self.source, self.dirname, self.hf_path = source, dirname, hf_path
        self.val_split, self.val_size = val_split, val_size
        self._origin: dict[str, Any] | None = None
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def _locate(self) -> dict[str, Any]:
        if self._origin is None:
            if self.source in ("auto", "folder"):
                files = [*TRAIN_FILES, TEST_FILE]
                try:
                    folder = find_dataset_dir(self.data_dir, self.dirname, files, fill_hint=MANUAL_STEPS)
                    self._origin = {"kind": "folder", "path": str(folder),
                                    "identity": {f: source_identity(folder / f) for f in files}}
                    return self._origin
                except DataError as e:
                    # a cifar-10-batches-py/ that lacks a file is an incomplete download: name the file, never fall
                    # back to the hub (whose "no network" would hide it)
                    if self.source == "folder" or "but it lacks" in str(e):
                        raise
            self._origin = {"kind": "hub", "path": self.hf_path}
        return self._origin

    def _read(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Full train and test as (gray (n, 1024) uint8, labels)."""
        origin = self._locate()
        if origin["kind"] == "folder":
            folder = Path(origin["path"])
            parts = [read_batch(folder / f) for f in TRAIN_FILES]
            train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
            test = read_batch(folder / TEST_FILE)
            return {"train": (rgb_to_gray(train[0]), train[1]), "test": (rgb_to_gray(test[0]), test[1])}
        hint = f"Looked for {self.dirname}/ up to 3 levels below {self.data_dir}. {MANUAL_STEPS}"
        ds = load_hub_dataset(self.hf_path, self.data_dir / "hf", hint)
        out = {}
        for split in ("train", "test"):
            rows = ds[split]
            column = "img" if "img" in rows.column_names else "image"  # the hub's column is `img`
            rgb = []
            for i, im in enumerate(rows[column]):
                if im.size != (32, 32):
                    raise DataError(f"{self.hf_path} {split} image {i}: size {im.size}, expected 32x32")
                rgb.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels = np.asarray(rows["label"], dtype=np.int64)
            if labels.min() < 0 or labels.max() > 9:
                raise DataError(f"{self.hf_path} {split}: labels must be 0..9, found {labels.min()}..{labels.max()}")
            out[split] = (rgb_to_gray(np.stack(rgb)), labels)
        return out

    def cache_options(self) -> dict[str, Any]:
        return {"task": "image", "source": self._locate(), "grayscale": "tf-rgb_to_grayscale",
                "val_split": self.val_split, "val_size": self.val_size}

    def _split_indices(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 < self.val_size < n:
            where = self._locate()["path"]
            raise DataError(
                f"{where}: the train split has {n} images, so a validation hold-out of task.datamodule.val_size="
                f"{self.val_size} leaves {'none' if self.val_size >= n else 'all'} for training; the CIFAR-10 release has "
                f"50,000 (is the tree complete?), or set task.datamodule.val_size to a number between 1 and {n - 1}")
        if self.val_split == "last":
            return np.arange(n - self.val_size), np.arange(n - self.val_size, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(42)).numpy()
        return perm[: n - self.val_size], perm[n - self.val_size :]

    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        if self._arrays is None:
            full = self._read()
            train_idx, val_idx = self._split_indices(len(full["train"][1]))
            self._arrays = {
                "train": (full["train"][0][train_idx], full["train"][1][train_idx]),
                "val": (full["train"][0][val_idx], full["train"][1][val_idx]),
                "test": full["test"],
            }
        images, labels = self._arrays[split]
        np.save(folder / f"{split}.npy", np.ascontiguousarray(images))
        np.save(folder / f"{split}_labels.npy", labels)
        if split == "test":
            self._arrays = None
        return {"n": len(labels), "label_counts": np.bincount(labels, minlength=10).tolist()}

    def open_split(self, split: str) -> ImageArrayDataset:
        return ImageArrayDataset(self.cache.path(split, ".npy"), self.cache.path(f"{split}_labels", ".npy"))

