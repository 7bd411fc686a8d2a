"""Text, Retrieval, Image, Pathfinder and Path-X DataModules on small trees in the official formats."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lra_bench.data.base import PairBatch
from lra_bench.data.image import CIFAR10DataModule, rgb_to_gray
from lra_bench.data.pathfinder import PathfinderDataModule
from lra_bench.data.retrieval import AANDataModule
from lra_bench.data.text import IMDBDataModule
from lra_bench.errors import ConfigError, DataError
from tests.fixtures import (
    AAN_TEXTS,
    RELEASE,
    cifar_rgb,
    write_aan,
    write_aclimdb,
    write_cifar_batches,
    write_cifar_hub_layout,
    write_imdb_hub_layout,
    write_pathfinder_tree,
)


def dm_kwargs(root: Path, tmp_path: Path, **kw) -> dict:
    return {"data_dir": str(root), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, **kw}


def as_bytes(ids: np.ndarray) -> bytes:
    return bytes((np.asarray(ids, dtype=np.int64) - 1).astype(np.uint8))


# --- Text (IMDB) --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imdb")
    write_aclimdb(root)
    return root


def test_imdb_folder_is_read_at_byte_level_with_test_as_val(imdb_root: Path, tmp_path: Path, caplog) -> None:
    dm = IMDBDataModule(**dm_kwargs(imdb_root, tmp_path))
    with caplog.at_level("INFO"):
        dm.setup()
    assert "validating on the test set" in caplog.text
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 12, "val": 12, "test": 12}
    ids, label = dm.datasets["train"][0]
    assert label == 0 and as_bytes(ids) == "Terrible.<br />Just terrible. (train 0)".encode()  # neg first, <br /> kept
    ids, label = dm.datasets["train"][7]
    assert label == 1 and as_bytes(ids).decode() == "Brilliant — a chef-d'œuvre! (train 1)"  # UTF-8 bytes + 1
    assert dm.vocab_size == 257 and int(ids.max()) <= 256
    np.testing.assert_array_equal(dm.datasets["val"].labels, dm.datasets["test"].labels)


def test_imdb_max_length_and_train_holdout(imdb_root: Path, tmp_path: Path) -> None:
    dm = IMDBDataModule(**dm_kwargs(imdb_root, tmp_path, max_length=10, val_source="train_holdout", val_fraction=0.25))
    dm.setup()
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 9, "val": 3, "test": 12}
    assert int(dm.datasets["train"].lengths.max()) == 10


def test_imdb_character_vocabulary_as_s4(imdb_root: Path, tmp_path: Path) -> None:
    dm = IMDBDataModule(**dm_kwargs(imdb_root, tmp_path, tokenizer="chars", min_freq=3, append_eos=True, max_length=12))
    dm.setup()
    meta = dm.cache.meta()["stats"]["train"]
    assert dm.vocab_size == meta["vocab_size"] == 3 + len(meta["chars"])
    assert "ü" not in meta["chars"]  # rare characters become <unk> (id 1)
    ids, _ = dm.datasets["train"][0]
    assert len(ids) == 12 and ids[-1] == 2  # <eos> appended within max_length
    assert int(dm.datasets["train"].lengths.max()) <= 12


def test_imdb_hub_layout_is_the_fallback(tmp_path: Path) -> None:
    hub = write_imdb_hub_layout(tmp_path / "hub")
    (tmp_path / "root").mkdir()
    dm = IMDBDataModule(**dm_kwargs(tmp_path / "root", tmp_path, hf_path=str(hub)))
    dm.setup()
    assert len(dm.datasets["train"]) == 12
    assert dm.cache.options["source"]["kind"] == "hub"


def test_imdb_without_any_source_gives_the_manual_steps(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError, match=r"(no network|failed).*aclImdb_v1.tar.gz.*ListOps, Pathfinder and Path-X need no "
                                        r"download"):
        IMDBDataModule(**dm_kwargs(tmp_path / "root", tmp_path)).setup()
    with pytest.raises(DataError, match="no aclImdb/"):
        IMDBDataModule(**dm_kwargs(tmp_path / "root", tmp_path, source="folder")).setup()
    with pytest.raises(ConfigError, match="val_source"):
        IMDBDataModule(**dm_kwargs(tmp_path, tmp_path, val_source="dev"))


# --- Retrieval (AAN) ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aan_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aan")
    write_aan(root)
    return root


def test_aan_pairs_keep_literal_quotes_and_utf8(aan_root: Path, tmp_path: Path) -> None:
    dm = AANDataModule(**dm_kwargs(aan_root, tmp_path))
    dm.setup()
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 24, "val": 8, "test": 8}
    lines = (aan_root / RELEASE / "tsv_data" / "new_aan_pairs.train.tsv").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        label, _, _, text1, text2 = line.split("\t")
        ids1, ids2, y = dm.datasets["train"][i]
        assert y == int(float(label))
        assert as_bytes(ids1) == text1.encode("utf-8")[:4000] and as_bytes(ids2) == text2.encode("utf-8")[:4000]
    assert any(b'"quoted"' in as_bytes(dm.datasets["train"][i][0]) for i in range(24))
    batch = next(iter(dm.val_dataloader()))
    assert isinstance(batch, PairBatch) and batch.tokens.shape[0] == batch.tokens2.shape[0] == 4


def test_aan_documents_are_truncated_while_parsing(aan_root: Path, tmp_path: Path) -> None:
    dm = AANDataModule(**dm_kwargs(aan_root, tmp_path, max_length=7))
    dm.setup()
    assert int(dm.datasets["train"].lengths.max()) == 7 and int(dm.datasets["train"].lengths2.max()) == 7


def test_aan_character_tokens(aan_root: Path, tmp_path: Path) -> None:
    dm = AANDataModule(**dm_kwargs(aan_root, tmp_path, tokenizer="chars", append_eos=True, max_length=30))
    dm.setup()
    ids1, _, _ = dm.datasets["train"][0]
    assert ids1[-1] == 2 and len(ids1) <= 30 and dm.vocab_size > 20


@pytest.mark.parametrize(
    "line, message",
    [
        ("1.0\tA\tB\tonly four fields", r"new_aan_pairs.train.tsv:2: expected 5 tab-separated fields"),
        ("2.0\tA\tB\tx\ty", r"new_aan_pairs.train.tsv:2: label 2 is out of range"),
        ("yes\tA\tB\tx\ty", r"new_aan_pairs.train.tsv:2: label b'yes' is not a number"),
    ],
)
def test_aan_malformed_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    folder = write_aan(tmp_path / "root")
    path = folder / "new_aan_pairs.train.tsv"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    path.write_text(first + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        AANDataModule(**dm_kwargs(tmp_path / "root", tmp_path)).setup()


def test_aan_missing_files_name_the_search_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError, match=r"no tsv_data/ with new_aan_pairs.train.tsv.*lra_release.gz"):
        AANDataModule(**dm_kwargs(tmp_path / "root", tmp_path)).setup()


# --- Image (CIFAR-10) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(root)
    return root


def test_grayscale_is_tf_rgb_to_grayscale_on_uint8() -> None:
    rgb = np.array([[[[255, 255, 255], [0, 0, 0], [100, 150, 200], [10, 0, 255]]]], dtype=np.uint8).reshape(1, 1, 4, 3)
    g = rgb_to_gray(rgb)[0]
    # floor((0.2989 r + 0.587 g + 0.114 b) / 255 * 255.5)
    expected = [int(np.floor((0.2989 * r + 0.587 * gg + 0.114 * b) / 255 * 255.5)) for r, gg, b in rgb[0, 0]]
    assert g.tolist() == expected and expected[0] == 255 and expected[1] == 0


def test_cifar_pickles_with_both_validation_conventions(cifar_root: Path, tmp_path: Path) -> None:
    last = CIFAR10DataModule(**dm_kwargs(cifar_root, tmp_path, val_size=8))
    last.setup()
    assert {s: len(d) for s, d in last.datasets.items()} == {"train": 32, "val": 8, "test": 8}
    rgb5, labels5 = cifar_rgb(8, seed=4)  # data_batch_5 is the last 8 of train
    np.testing.assert_array_equal(last.datasets["val"].images, rgb_to_gray(rgb5))
    np.testing.assert_array_equal(last.datasets["val"].labels, labels5)
    rnd = CIFAR10DataModule(**dm_kwargs(cifar_root, tmp_path, val_size=8, val_split="random"))
    rnd.setup()
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(42)).numpy()  # random_split(seed 42)
    full = np.concatenate([rgb_to_gray(cifar_rgb(8, seed=k)[0]) for k in range(5)])
    np.testing.assert_array_equal(rnd.datasets["val"].images, full[perm[32:]])
    batch = next(iter(rnd.test_dataloader()))
    assert batch.tokens.shape == (4, 1024) and (batch.lengths == 1024).all()


def test_cifar_hub_layout_is_the_fallback(tmp_path: Path) -> None:
    hub = write_cifar_hub_layout(tmp_path / "hub")
    (tmp_path / "root").mkdir()
    dm = CIFAR10DataModule(**dm_kwargs(tmp_path / "root", tmp_path, hf_path=str(hub), val_size=8))
    dm.setup()
    np.testing.assert_array_equal(dm.datasets["test"].images, rgb_to_gray(cifar_rgb(8, seed=5)[0]))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:50]), r"data_batch_3: not a CIFAR-10 python batch"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 12]})), r"labels must be 0..9"),
    (lambda p: p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]})), r"expected data of shape \(n, 3072\)"),
])
def test_cifar_corrupt_batches_get_clear_errors(tmp_path: Path, damage, message: str) -> None:
    folder = write_cifar_batches(tmp_path / "root")
    damage(folder / "data_batch_3")
    with pytest.raises(DataError, match=message):
        CIFAR10DataModule(**dm_kwargs(tmp_path / "root", tmp_path, val_size=8)).setup()


# --- Pathfinder and Path-X ----------------------------------------------------------------------

def test_pathfinder_skips_the_empty_png_and_splits_like_random_split(tmp_path: Path, caplog) -> None:
    write_pathfinder_tree(tmp_path / "root", per_batch=10, batches=3, empty=(0, 3))
    dm = PathfinderDataModule(**dm_kwargs(tmp_path / "root", tmp_path, decode_workers=2))
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "skipped 1 empty image" in caplog.text
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 25, "val": 2, "test": 2}  # 29 kept: int(2.9) each
    assert dm.cache.meta()["stats"]["train"]["empty_skipped"] == 1
    base = tmp_path / "root" / RELEASE / "pathfinder32" / "curv_contour_length_14"
    kept = [base / "imgs" / str(k) / f"sample_{i}.png" for k in range(3) for i in range(10) if (k, i) != (0, 3)]
    perm = torch.randperm(29, generator=torch.Generator().manual_seed(42)).numpy()
    for j, idx in enumerate(perm[27:29]):  # train, val, test = consecutive slices of the permutation
        np.testing.assert_array_equal(dm.datasets["test"][j][0], np.asarray(Image.open(kept[idx])).reshape(-1))
    ordered = PathfinderDataModule(**dm_kwargs(tmp_path / "root", tmp_path, split="ordered"))
    ordered.setup()
    np.testing.assert_array_equal(ordered.datasets["train"][0][0], np.asarray(Image.open(kept[0])).reshape(-1))


def test_pathx_reads_128px_and_binary_npy_metadata(tmp_path: Path) -> None:
    base = write_pathfinder_tree(tmp_path / "root", resolution=128, per_batch=5, batches=2, empty=None)
    rows = [line.split() for line in (base / "metadata" / "1.npy").read_text().splitlines()]
    np.save(base / "metadata" / "1.npy", np.array(rows))  # what the original generator's np.save writes
    dm = PathfinderDataModule(**dm_kwargs(tmp_path / "root", tmp_path, resolution=128))
    dm.setup()
    assert sum(len(d) for d in dm.datasets.values()) == 10
    assert dm.datasets["train"].images.shape[1] == 16384 and dm.datasets["train"].images.dtype == np.uint8


@pytest.mark.parametrize("damage, message", [
    (lambda b: Image.new("RGB", (32, 32)).save(b / "imgs/1/sample_2.png"), r"sample_2.png: mode RGB, expected an 8-bit grayscale"),
    (lambda b: Image.new("L", (16, 32)).save(b / "imgs/1/sample_2.png"), r"sample_2.png: size 16x32, expected 32x32"),
    (lambda b: (b / "imgs/1/sample_2.png").write_bytes((b / "imgs/1/sample_2.png").read_bytes()[:60]), r"sample_2.png: cannot decode the PNG"),
    (lambda b: (b / "imgs/1/sample_2.png").unlink(), r"1.npy:3: image .*sample_2.png is missing"),
    (lambda b: (b / "metadata/1.npy").write_text("imgs/1 sample_0.png 0 7 1.0\n"), r"1.npy:1: label '7' is not 0 or 1"),
])
def test_pathfinder_bad_images_get_clear_errors(tmp_path: Path, damage, message: str) -> None:
    base = write_pathfinder_tree(tmp_path / "root", per_batch=4, batches=2, empty=None)
    damage(base)
    with pytest.raises(DataError, match=message):
        PathfinderDataModule(**dm_kwargs(tmp_path / "root", tmp_path, decode_workers=1)).setup()


def test_pathfinder_missing_difficulty_names_the_generator(tmp_path: Path) -> None:
    write_pathfinder_tree(tmp_path / "root", difficulty="curv_baseline", per_batch=2, batches=1, empty=None)
    with pytest.raises(DataError, match=r"curv_contour_length_14/metadata/ is missing.*python -m data_prep.pathfinder"):
        PathfinderDataModule(**dm_kwargs(tmp_path / "root", tmp_path)).setup()
    with pytest.raises(ConfigError, match="resolution"):
        PathfinderDataModule(**dm_kwargs(tmp_path, tmp_path, resolution=48))
