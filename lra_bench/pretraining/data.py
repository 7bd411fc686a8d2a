"""Stage 1's data: the training split's inputs and nothing else.

Self-pretraining may see the training inputs only: never a label, never a validation or test row (the paper's
protocol, section 3: "using only the downstream task data"; a label or a held-out row would leak what stage 2 is
scored on). ``PretrainData`` wraps the task's DataModule and serves only its train split, through ``InputsOnly``,
which reads each row's inputs without its label (``inputs(index)`` of our datasets; a dataset without it is read
whole and the label dropped before collation). It has no validation or test loader, so Lightning runs none.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lra_bench.data.base import LRADataModule, ResumableRandomSampler, pad_rows


class InputBatch(NamedTuple):
    """tokens: (B, L) long, right-padded with 0; lengths: (B,) long. No labels."""

    tokens: torch.Tensor
    lengths: torch.Tensor


class InputPairBatch(NamedTuple):
    """Both documents of Retrieval pairs, each padded on its own. No labels."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    tokens2: torch.Tensor
    lengths2: torch.Tensor


class InputsOnly(Dataset):
    """The rows of a dataset without their labels: ``(ids,)`` or ``(ids, ids2)``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        read = getattr(self.dataset, "inputs", None)
        if read is not None:
            return read(index)
        return tuple(self.dataset[index][:-1])  # a dataset of one's own: the label is the last item, dropped


def collate_inputs(items: list[tuple[np.ndarray, ...]]) -> InputBatch | InputPairBatch:
    tokens, lengths = pad_rows([it[0] for it in items])
    if len(items[0]) == 2:
        tokens2, lengths2 = pad_rows([it[1] for it in items])
        return InputPairBatch(tokens, lengths, tokens2, lengths2)
    return InputBatch(tokens, lengths)


class PretrainData(pl.LightningDataModule):
    """The task's DataModule seen through stage 1: its training inputs, in a seeded resumable order of its own
    (``batch_size``: stage 1's batch; None: the task's)."""

    def __init__(self, task_data: LRADataModule, batch_size: int | None = None):
        super().__init__()
        self.task_data = task_data
        self.batch_size = batch_size or task_data.batch_size
        self.train_sampler: ResumableRandomSampler | None = None  # positioned by ResumeState (exact mid-epoch resume)

    def prepare_data(self) -> None:
        self.task_data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.task_data.setup(stage)
        if self.train_sampler is None:
            data = self.task_data
            self.train_sampler = ResumableRandomSampler(len(data.datasets["train"]), data.seed, self.batch_size,
                                                        data.drop_last)

    def train_dataloader(self) -> DataLoader:
        data = self.task_data
        return data._loader("train", shuffle=True, dataset=InputsOnly(data.datasets["train"]),
                            batch_size=self.batch_size, sampler=self.train_sampler, collate_fn=collate_inputs)
