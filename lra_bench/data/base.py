"""Shared pieces of every LRA DataModule: the cached dataset, per-batch padding with true lengths, loaders.

Batches are ``Batch(tokens, lengths, labels)`` (or ``PairBatch`` for Retrieval), padded to the
longest row of the batch. Padding is id 0 but models never infer it from the ids: they use
``lengths``, so a pixel value of 0 stays data.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lra_bench.data.cache import SplitCache

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class Batch(NamedTuple):
    """tokens: (B, L) long, right-padded with 0; lengths: (B,) long, true lengths; labels: (B,) long."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor


class PairBatch(NamedTuple):
    """Two documents per example (Retrieval), each padded on its own, and one label."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    tokens2: torch.Tensor
    lengths2: torch.Tensor
    labels: torch.Tensor


class ArrowSequenceDataset(Dataset):
    """Rows of one cached split, read zero-copy from its memory-mapped Arrow file.

    Each item is ``(ids, label)`` or ``(ids, ids2, label)`` with ``ids`` a NumPy view. The arrays are
    re-opened lazily in each worker process instead of being pickled.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._columns: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = None
        self._open()

    def _open(self) -> None:
        from datasets import Dataset as HFDataset

        table = HFDataset.from_file(str(self.path)).data.table
        self.paired = "input_ids2" in table.column_names
        names = ["input_ids", "input_ids2"] if self.paired else ["input_ids"]
        self._columns = {
            name: [(c.offsets.to_numpy(), c.values.to_numpy(zero_copy_only=True)) for c in table.column(name).chunks]
            for name in names
        }
        chunk_rows = [len(c) for c in table.column("label").chunks]
        self._starts = np.concatenate([[0], np.cumsum(chunk_rows)]).astype(np.int64)
        self.labels = table.column("label").to_numpy()
        self.lengths = table.column("length").to_numpy()
        self.lengths2 = table.column("length2").to_numpy() if self.paired else None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._open()

    def __len__(self) -> int:
        return len(self.labels)

    def _row(self, name: str, index: int) -> np.ndarray:
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        offsets, values = self._columns[name][chunk]
        i = index - self._starts[chunk]
        return values[offsets[i] : offsets[i + 1]]

    def inputs(self, index: int) -> tuple[np.ndarray, ...]:
        """The row's ids without its label (self-pretraining reads no label: lra_bench/pretraining/data.py)."""
        if index < 0:
            index += len(self)
        if self.paired:
            return self._row("input_ids", index), self._row("input_ids2", index)
        return (self._row("input_ids", index),)

    def __getitem__(self, index: int) -> tuple:
        if index < 0:
            index += len(self)
        label = int(self.labels[index])
        if self.paired:
            return self._row("input_ids", index), self._row("input_ids2", index), label
        return self._row("input_ids", index), label


class ImageArrayDataset(Dataset):
    """Fixed-length rows (flattened grayscale images, uint8) from ``<split>.npy`` and ``<split>_labels.npy``.

    Both are memory-mapped, never loaded whole (Path-X: 200K x 16384 bytes), and re-opened in each worker.
    """

    def __init__(self, images: str | Path, labels: str | Path):
        self.images_path, self.labels_path = Path(images), Path(labels)
        self._open()

    def _open(self) -> None:
        self.images = np.load(self.images_path, mmap_mode="r")
        self.labels = np.load(self.labels_path)
        self.lengths = np.full(len(self.labels), self.images.shape[1], dtype=np.int64)
        self.lengths2 = None
        self.paired = False

    def __getstate__(self) -> dict[str, Any]:
        return {"images_path": self.images_path, "labels_path": self.labels_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.images_path, self.labels_path = state["images_path"], state["labels_path"]
        self._open()

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, index: int) -> tuple[np.ndarray]:
        """The image without its label (self-pretraining reads no label: lra_bench/pretraining/data.py)."""
        return (self.images[index],)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


class ResumableRandomSampler(Sampler[int]):
    """A seeded permutation per data epoch, positioned by how many training batches were consumed.

    The position is one number, ``consumed`` (training batches this rank has taken so far, across epochs), kept
    by the ``ResumeState`` callback and restored from checkpoints: each iterator starts at data epoch
    ``consumed // batches_per_epoch``, batch ``consumed % batches_per_epoch``. It does not follow Lightning's
    ``set_epoch``: with workers Lightning builds (and the workers prefetch from) the first iterator before
    ``set_epoch`` runs, and after a resume at an epoch boundary its epoch counter runs one ahead; the consumed-batch
    count is the same in an interrupted and an uninterrupted run whatever the loop's bookkeeping.
    Under DDP (``trainer=ddp`` turns Lightning's own distributed sampler off) rank r takes every world-th index of
    the same permutation, so the ranks' batches at a step together are exactly the single-process batch of world x
    batch_size samples.
    """

    def __init__(self, n: int, seed: int, batch_size: int = 1, drop_last: bool = False):
        self.n, self.seed, self.batch_size, self.drop_last = n, seed, batch_size, drop_last
        self.consumed = 0
        self.limit_batches: int | float | None = None  # Lightning's limit_train_batches, set by ResumeState

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def set_epoch(self, epoch: int) -> None:
        """Kept for Lightning's call; the position comes from ``consumed`` (see the class docstring)."""

    @property
    def batches_per_epoch(self) -> int:
        """Training batches Lightning runs per epoch on this rank (its limit_train_batches rule included)."""
        full = len(self) // self.batch_size if self.drop_last else -(-len(self) // self.batch_size)
        limit = self.limit_batches
        if limit is None:
            return max(full, 1)
        return max(min(full, int(limit)) if isinstance(limit, int) else int(full * float(limit)), 1)

    def order(self, epoch: int) -> list[int]:
        """This rank's indices of data epoch ``epoch``."""
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)).tolist()
        rank, world = self._world()
        return order[rank::world]

    def __iter__(self):
        epoch, offset = divmod(self.consumed, self.batches_per_epoch)
        return iter(self.order(epoch)[offset * self.batch_size :])

    def __len__(self) -> int:
        rank, world = self._world()
        return len(range(rank, self.n, world))


def pad_rows(rows: list[np.ndarray], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id arrays to the longest one: returns tokens (B, L) long and lengths (B,) long."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    if bool((lengths == lengths[0]).all()):  # fixed-length rows (images): one stack, no padding
        return torch.from_numpy(np.stack(rows).astype(np.int64)), lengths
    tokens = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
    return tokens, lengths


def collate(items: list[tuple]) -> Batch | PairBatch:
    """Pad a list of dataset items into a ``Batch`` (or ``PairBatch`` for two-document items)."""
    labels = torch.tensor([it[-1] for it in items], dtype=torch.long)
    tokens, lengths = pad_rows([it[0] for it in items])
    if len(items[0]) == 3:
        tokens2, lengths2 = pad_rows([it[1] for it in items])
        return PairBatch(tokens, lengths, tokens2, lengths2, labels)
    return Batch(tokens, lengths, labels)


class LRADataModule(pl.LightningDataModule, ABC):
    """Locate the source data, preprocess it once into the Arrow cache, serve padded batches.

    Subclasses say where the data lies (``locate``), which options change the preprocessing
    (``cache_options``) and how one split is written (``write_split``).
    """

    task_name: str = "task"
    token_dtype: str = "uint8"

    def __init__(
        self,
        data_dir: str,
        cache_dir: str,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 42,
        drop_last: bool = False,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.drop_last = drop_last  # train loader only (S4's loaders drop the last partial batch); eval keeps it
        self.datasets: dict[str, ArrowSequenceDataset] = {}
        self.train_sampler: ResumableRandomSampler | None = None
        self._cache: SplitCache | None = None
        self._verified = False

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def cache_options(self) -> dict[str, Any]:
        """Every option that changes the cached arrays, including the source files' identity."""

    @abstractmethod
    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        """Write one split's files into ``folder``; return statistics to keep in meta.json."""

    def open_split(self, split: str) -> Dataset:
        """The dataset of one cached split (token rows in Arrow by default)."""
        return ArrowSequenceDataset(self.cache.path(split))

    # --- cache -------------------------------------------------------------------------------
    @property
    def cache(self) -> SplitCache:
        if self._cache is None:
            self._cache = SplitCache(self.cache_dir, self.task_name, self.cache_options(), SPLITS)
        return self._cache

    def prepare_data(self) -> None:
        """Build the cache, or check the existing one against its checksums (once per process) and rebuild it if
        it changed since it was written."""
        self.cache.build(self.write_split, verify=not self._verified)
        self._verified = True

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.prepare_data()  # no-op when the cache exists; covers setup() without prepare_data()
            self.datasets = {split: self.open_split(split) for split in SPLITS}
            self.train_sampler = ResumableRandomSampler(len(self.datasets["train"]), self.seed, self.batch_size, self.drop_last)

    # --- loaders -----------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool, dataset: Dataset | None = None, batch_size: int | None = None,
                sampler: Sampler | None = None, collate_fn=collate) -> DataLoader:
        """``dataset``, ``batch_size``, ``sampler`` and ``collate_fn`` replace the split's own (SPT's stage 1 reads the
        training inputs through ``lra_bench/pretraining/data.py`` with its own batch and order)."""
        dataset = self.datasets[split] if dataset is None else dataset
        if sampler is None and shuffle:
            sampler = self.train_sampler  # seeded per epoch, resumable mid-epoch
        if not shuffle and torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=False)  # eval: one shard per rank
        return DataLoader(
            dataset,
            batch_size=batch_size or (self.batch_size if split == "train" else self.eval_batch_size),
            sampler=sampler,
            drop_last=self.drop_last and split == "train",  # eval loaders always keep their last partial batch
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_fn,
            # its own generator: creating an iterator never draws from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
