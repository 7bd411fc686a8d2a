"""ListOps tokenisation, the DataModule on the release layout, the cache, and clear errors on bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lra_bench.data.base import Batch
from lra_bench.data.listops import VOCAB, VOCAB_SIZE, ListOpsDataModule, detokenize, tokenize
from lra_bench.errors import DataError


def make_dm(root: Path, cache: Path, **kw) -> ListOpsDataModule:
    return ListOpsDataModule(data_dir=str(root), cache_dir=str(cache), **{"batch_size": 16, "num_workers": 0, **kw})


def write_tsv(path: Path, rows: list[str], header: str = "Source\tTarget") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join([header, *rows]) + "\r\n")


def test_tokenisation_is_lras_with_a_fixed_vocabulary() -> None:
    ids = tokenize("( ( ( ( [MAX 2 ) 9 ) ( ( [SM 1 ) 3 ] ) ) ] )")
    assert detokenize(ids) == "[MAX 2 9 [SM 1 3 X X"  # ']' -> X, parentheses dropped
    assert ids.tolist() == [13, 4, 11, 15, 3, 5, 16, 16]
    assert VOCAB_SIZE == 17 and VOCAB[0] == "<pad>" and VOCAB[16] == "X"
    assert tokenize("[MIN 0 1 ]").tolist() == [12, 2, 3, 16]
    assert tokenize("[MED 0 ]").tolist() == [14, 2, 16]


@pytest.mark.parametrize("source", ["[MIN 12 ]", "[FIRST 1 ]", "( [SM a ] )", "MAX 1 ]", "[MIN 1 ]]", "", "( )"])
def test_unknown_tokens_are_rejected(source: str) -> None:
    assert tokenize(source) is None


def test_datamodule_finds_the_doubled_release_prefix_and_serves_padded_batches(listops_root: Path, tmp_path: Path) -> None:
    dm = make_dm(listops_root, tmp_path / "cache")
    dm.prepare_data()
    dm.setup()
    assert dm.source_dir == listops_root / "lra_release" / "lra_release" / "listops-1000"
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 96, "val": 40, "test": 40}
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, Batch)
    assert batch.tokens.dtype == torch.long and batch.tokens.shape[0] == 16
    assert batch.tokens.shape[1] == int(batch.lengths.max())  # padded per batch, not to max_length
    for row, n in zip(batch.tokens, batch.lengths):
        assert (row[n:] == 0).all() and (row[:n] != 0).all()
    # eval loaders keep the last partial batch: 40 = 16 + 16 + 8
    assert [len(b.labels) for b in dm.val_dataloader()] == [16, 16, 8]
    assert [len(b.labels) for b in dm.test_dataloader()] == [16, 16, 8]
    assert sum(len(b.labels) for b in dm.train_dataloader()) == 96


def test_batches_hold_the_file_rows(listops_root: Path, tmp_path: Path) -> None:
    dm = make_dm(listops_root, tmp_path / "cache", batch_size=40)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    src = dm.source_dir / "basic_test.tsv"
    lines = src.read_text().split("\r\n")[1:-1]
    for i, line in enumerate(lines):
        source, target = line.split("\t")
        assert batch.labels[i] == int(target)
        assert batch.tokens[i, : batch.lengths[i]].numpy().tolist() == tokenize(source).tolist()


def test_loaders_work_with_worker_processes(listops_root: Path, tmp_path: Path) -> None:
    dm = make_dm(listops_root, tmp_path / "cache", num_workers=1)
    dm.setup()
    labels = torch.cat([b.labels for b in dm.test_dataloader()])
    assert len(labels) == 40


def test_cache_is_reused_and_keyed_by_options(listops_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = make_dm(listops_root, cache)
    a.setup()
    stamp = a.cache.path("train").stat().st_mtime_ns
    b = make_dm(listops_root, cache)
    b.setup()
    assert b.cache.dir == a.cache.dir and b.cache.path("train").stat().st_mtime_ns == stamp
    c = make_dm(listops_root, cache, max_length=8)
    c.setup()
    assert c.cache.dir != a.cache.dir
    assert int(c.datasets["train"].lengths.max()) == 8
    assert c.cache.meta()["stats"]["train"]["truncated"] > 0


def test_a_truncated_cache_file_is_rebuilt(listops_root: Path, tmp_path: Path) -> None:
    dm = make_dm(listops_root, tmp_path / "cache")
    dm.setup()
    path = dm.cache.path("val")
    path.write_bytes(path.read_bytes()[:100])
    fresh = make_dm(listops_root, tmp_path / "cache")
    assert not fresh.cache.is_complete()
    fresh.setup()
    assert len(fresh.datasets["val"]) == 40


def test_missing_data_gives_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no listops-1000/ .* python -m data_prep.listops --out-dir"):
        make_dm(tmp_path / "empty", tmp_path / "cache").setup()
    with pytest.raises(DataError, match="does not exist"):
        make_dm(tmp_path / "nowhere", tmp_path / "cache").setup()
    partial = tmp_path / "partial" / "listops-1000"
    write_tsv(partial / "basic_train.tsv", ["[MIN 1 ]\t1"])
    with pytest.raises(DataError, match="lacks basic_val.tsv, basic_test.tsv"):
        make_dm(tmp_path / "partial", tmp_path / "cache").setup()


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["( [MIN 1 ] )\t1"], "Source,Target", r"basic_train.tsv:1: expected the header"),
        (["( [MIN 1 ] )\t1", "( [MAX 1 ] )"], "Source\tTarget", r"basic_train.tsv:3: expected 2 tab-separated fields"),
        (["( [MIN 1 ] )\t10"], "Source\tTarget", r"basic_train.tsv:2: label '10' is not an integer in 0..9"),
        (["( [MIN 1 ] )\tx"], "Source\tTarget", r"basic_train.tsv:2: label 'x'"),
        (["( [MIN 1 ] )\t1", "( [LAST 1 ] )\t1"], "Source\tTarget", r"basic_train.tsv:3: unknown token"),
        ([], "Source\tTarget", r"basic_train.tsv: no rows after the header"),
    ],
)
def test_malformed_files_name_the_file_and_line(
    listops_root: Path, tmp_path: Path, rows: list[str], header: str, message: str
) -> None:
    folder = tmp_path / "data" / "listops-1000"
    shutil.copytree(listops_root / "lra_release" / "lra_release" / "listops-1000", folder)
    write_tsv(folder / "basic_train.tsv", rows, header)
    with pytest.raises(DataError, match=message):
        make_dm(tmp_path / "data", tmp_path / "cache").setup()
    assert not list((tmp_path / "cache").glob("listops-*/meta.json")), "a failed build must not leave a cache"


def test_dataset_items_are_views_of_the_memory_mapped_cache(listops_root: Path, tmp_path: Path) -> None:
    dm = make_dm(listops_root, tmp_path / "cache")
    dm.setup()
    ids, label = dm.datasets["train"][0]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.uint8 and isinstance(label, int)
    assert dm.datasets["train"][-1][0].tolist() == dm.datasets["train"][95][0].tolist()


def test_s4_style_eos_ends_every_row_within_max_length(listops_root: Path, tmp_path: Path) -> None:
    """S4 reads ListOps with l_max including an appended <eos> (id 17; vocabulary 18)."""
    from lra_bench.data.listops import EOS_ID

    dm = ListOpsDataModule(str(listops_root), str(tmp_path / "cache"), batch_size=8, max_length=20, append_eos=True)
    dm.setup()
    plain = ListOpsDataModule(str(listops_root), str(tmp_path / "cache"), batch_size=8, max_length=19)
    plain.setup()
    assert dm.cache.dir != plain.cache.dir
    for i in range(len(dm.datasets["train"])):
        ids, label = dm.datasets["train"][i]
        assert ids[-1] == EOS_ID and len(ids) <= 20 and (ids[:-1] != EOS_ID).all()
        np.testing.assert_array_equal(ids[:-1], plain.datasets["train"][i][0])  # the same tokens, then <eos>


def test_drop_last_drops_only_the_last_partial_training_batch(listops_root: Path, tmp_path: Path) -> None:
    dm = ListOpsDataModule(str(listops_root), str(tmp_path / "cache"), batch_size=40, drop_last=True)
    dm.setup()
    assert len(dm.train_dataloader()) == 96 // 40 and all(len(b.labels) == 40 for b in dm.train_dataloader())
    assert sum(len(b.labels) for b in dm.val_dataloader()) == 40 and len(dm.val_dataloader()) == 1


def test_the_train_order_is_a_function_of_the_consumed_batches_only() -> None:
    """The sampler's position is the consumed-batch count (what a checkpoint holds), never Lightning's epoch counter:
    a fresh iterator at any count continues exactly where an uninterrupted pass would be."""
    from lra_bench.data.base import ResumableRandomSampler

    def batches(sampler: ResumableRandomSampler) -> list[list[int]]:
        order = list(iter(sampler))
        return [order[i : i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]

    full = ResumableRandomSampler(10, seed=3, batch_size=4)  # 3 batches an epoch (the last one short)
    stream = []
    for _ in range(3):  # three epochs, a new iterator each, as Lightning makes them
        stream += batches(full)
        full.consumed += full.batches_per_epoch
    assert stream[0] != stream[3] and sorted(sum(stream[:3], [])) == list(range(10))
    for consumed in range(9):  # resume at every batch of every epoch, the epoch boundaries included
        resumed = ResumableRandomSampler(10, seed=3, batch_size=4)
        resumed.consumed = consumed
        resumed.set_epoch(99)  # ignored: Lightning calls it at times that do not mark the position
        epoch_end = (consumed // 3 + 1) * 3
        assert batches(resumed) == stream[consumed:epoch_end]
    dropped = ResumableRandomSampler(10, seed=3, batch_size=4, drop_last=True)
    assert dropped.batches_per_epoch == 2
    limited = ResumableRandomSampler(10, seed=3, batch_size=4)
    limited.limit_batches = 2  # Lightning's limit_train_batches: an epoch ends after 2 batches
    limited.consumed = 2
    assert batches(limited)[0] == stream[3]  # the next epoch's first batch
