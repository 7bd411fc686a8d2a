"""No silent stale cache: a cache is keyed by everything it was built from and checked when it is opened.

Each test reproduces a way the old key (size + mtime of a few paths) served stale data, then checks that the
harness now rebuilds and says why.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.listops import ListOpsSpec, generate
from lra_bench.data.cache import describe_changes
from lra_bench.data.listops import ListOpsDataModule
from lra_bench.data.pathfinder import PathfinderDataModule
from lra_bench.data.text import IMDBDataModule
from lra_bench.errors import DataError
from tests.fixtures import write_aclimdb, write_pathfinder_tree


def kw(root: Path) -> dict:
    return {"data_dir": str(root), "cache_dir": str(root / "cache"), "batch_size": 4, "num_workers": 0}


def listops(root: Path) -> Path:
    generate(root / "listops-1000", {"train": 30, "val": 10, "test": 10}, seed=0,
             spec=ListOpsSpec(max_depth=3, max_args=3, min_length=5, max_length=40), progress=False)
    return root / "listops-1000" / "basic_train.tsv"


def edit_in_place_keeping_size_and_mtime(path: Path, edit) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    edit(data)
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_listops_label_edited_in_place_with_the_same_size_and_mtime_rebuilds(tmp_path: Path, caplog) -> None:
    train = listops(tmp_path)
    dm = ListOpsDataModule(**kw(tmp_path))
    dm.setup()
    before = dm.datasets["train"].labels.copy()

    def flip_first_label(data: bytearray) -> None:
        line_end = data.index(b"\r\n", data.index(b"\r\n") + 2)  # end of the first row after the header
        label_at = line_end - 1
        data[label_at] = ord("0") + (data[label_at] - ord("0") + 1) % 10

    edit_in_place_keeping_size_and_mtime(train, flip_first_label)
    with caplog.at_level(logging.WARNING):
        again = ListOpsDataModule(**kw(tmp_path))
        again.setup()
    assert again.cache.dir != dm.cache.dir
    assert again.datasets["train"].labels[0] == (before[0] + 1) % 10
    np.testing.assert_array_equal(again.datasets["train"].labels[1:], before[1:])
    assert "basic_train.tsv: content" in caplog.text  # says which source changed


def test_a_review_added_to_the_imdb_tree_rebuilds(tmp_path: Path, caplog) -> None:
    write_aclimdb(tmp_path)
    dm = IMDBDataModule(**kw(tmp_path), source="folder")
    dm.setup()
    n = len(dm.datasets["train"])
    (tmp_path / "aclImdb" / "train" / "pos" / "999_9.txt").write_text("A new review, added after the cache.")
    with caplog.at_level(logging.WARNING):
        again = IMDBDataModule(**kw(tmp_path), source="folder")
        again.setup()
    assert len(again.datasets["train"]) == n + 1
    assert "aclImdb/train: files added, removed or rewritten" in caplog.text


def test_a_pathfinder_png_corrupted_after_caching_is_noticed(tmp_path: Path) -> None:
    base = write_pathfinder_tree(tmp_path, per_batch=6, batches=1, empty=None)
    PathfinderDataModule(**kw(tmp_path), decode_workers=1).setup()
    png = base / "imgs" / "0" / "sample_2.png"
    edit_in_place_keeping_size_and_mtime(png, lambda data: data.__setitem__(slice(0, 8), b"garbage!"))
    with pytest.raises(DataError, match=r"sample_2.png: cannot decode the PNG"):
        PathfinderDataModule(**kw(tmp_path), decode_workers=1).setup()


def test_a_same_size_overwrite_inside_the_cache_is_detected_and_rebuilt(tmp_path: Path, caplog) -> None:
    listops(tmp_path)
    dm = ListOpsDataModule(**kw(tmp_path))
    dm.setup()
    expected = [dm.datasets["train"][i][0].tolist() for i in range(len(dm.datasets["train"]))]
    arrow = dm.cache.path("train")
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size, mtime kept
    st = arrow.stat()
    arrow.write_bytes(bytes(data))
    os.utime(arrow, ns=(st.st_atime_ns, st.st_mtime_ns))
    with caplog.at_level(logging.WARNING):
        again = ListOpsDataModule(**kw(tmp_path))
        again.setup()
    assert "train.arrow changed after the cache was written (checksum mismatch): rebuilding it" in caplog.text
    assert [again.datasets["train"][i][0].tolist() for i in range(len(again.datasets["train"]))] == expected


def test_build_folders_left_by_dead_processes_are_removed(tmp_path: Path) -> None:
    listops(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "cache" / f"listops-0123456789abcdef.tmp-{int(dead.stdout)}"
    stale.mkdir(parents=True)
    (stale / "train.arrow").write_bytes(b"half")
    alive = tmp_path / "cache" / f"listops-0123456789abcdef.tmp-{os.getpid()}"
    alive.mkdir()
    ListOpsDataModule(**kw(tmp_path)).setup()
    assert not stale.exists() and alive.exists()  # a running build (this pid) is left alone


def test_changes_are_described_by_source_and_option() -> None:
    old = {"max_length": 2000, "sources": {"train": {"path": "/d/basic_train.tsv", "size": 5, "sha256": "a"}}}
    new = {"max_length": 2048, "sources": {"train": {"path": "/d/basic_train.tsv", "size": 6, "sha256": "b"}}}
    assert describe_changes(old, new) == ["max_length: 2000 -> 2048", "/d/basic_train.tsv: content, size changed"]


def test_a_renamed_data_root_keeps_its_cache(tmp_path: Path, caplog) -> None:
    """The key is the sources' content and the options, not their location: renaming the root (its cache moves with
    it) builds nothing and logs nothing about a change."""
    listops(tmp_path / "before")
    first = ListOpsDataModule(**kw(tmp_path / "before"))
    first.setup()
    built = first.cache.meta_path.stat().st_mtime_ns
    (tmp_path / "before").rename(tmp_path / "after")
    with caplog.at_level(logging.INFO, logger="lra_bench.data.cache"):
        again = ListOpsDataModule(**kw(tmp_path / "after"))
        again.setup()
    assert again.cache.dir.name == first.cache.dir.name and again.cache.meta_path.stat().st_mtime_ns == built
    assert "building" not in caplog.text and "differs" not in caplog.text


def test_a_first_cache_of_other_sources_says_building_not_changed(tmp_path: Path, caplog) -> None:
    """Two ListOps folders under one root (the quick and the full data, say): the second's first cache is built
    from files no cache came from, so nothing 'changed'; an option changed on the same files is named."""
    listops(tmp_path)
    ListOpsDataModule(**kw(tmp_path)).setup()
    generate(tmp_path / "listops-small", {"train": 20, "val": 10, "test": 10}, seed=3,
             spec=ListOpsSpec(max_depth=3, max_args=3, min_length=5, max_length=40), progress=False)
    with caplog.at_level(logging.INFO, logger="lra_bench.data.cache"):
        ListOpsDataModule(**kw(tmp_path), dirname="listops-small").setup()
    assert "building the listops cache" in caplog.text and "no earlier cache of these sources" in caplog.text
    assert "changed" not in caplog.text and "differs" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lra_bench.data.cache"):
        ListOpsDataModule(**kw(tmp_path), dirname="listops-small", max_length=30).setup()
    assert "building a new listops cache" in caplog.text and "max_length: 2000 -> 30" in caplog.text


@pytest.mark.slow
def test_a_read_only_data_root_reads_its_complete_cache_and_a_missing_one_names_the_cache_folder(tmp_path: Path) -> None:
    """The data root, cache built, is bind-mounted read-only (its own mount namespace): the complete cache is read
    (no lock file created), and a run that needs a new cache stops with one line naming the cache folder (not the
    run folder) and paths.cache_dir."""
    from tests.conftest import TINY_RUN

    root, logs, out = tmp_path / "data", tmp_path / "logs", tmp_path / "out"
    listops(root)
    ListOpsDataModule(**kw(root)).setup()
    out.mkdir()
    read = (f"{sys.executable} -c 'from lra_bench.data.listops import ListOpsDataModule as M; "
            f"m = M(data_dir=\"{root}\", cache_dir=\"{root / 'cache'}\"); m.setup(); print(len(m.datasets[\"train\"]))'")
    train = " ".join([sys.executable, "-m", "lra_bench.train", *TINY_RUN, f"paths.data_dir={root}", f"paths.log_dir={logs}"])
    script = (f"mount --bind {root} {root} && mount -o remount,bind,ro {root} || exit 90\n"
              f"{read} > {out}/read.out 2> {out}/read.err; echo $? > {out}/read.rc\n"
              f"{train} > {out}/train.out 2> {out}/train.err; echo $? > {out}/train.rc\n")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=Path(__file__).parents[1],
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (out / "read.rc").read_text().strip() == "0", (out / "read.err").read_text()[-3000:]
    assert (out / "read.out").read_text().strip() == "30"
    err = (out / "train.err").read_text()
    assert (out / "train.rc").read_text().strip() == "2", err[-3000:]
    assert err.strip().splitlines()[-1] == (f"error: cannot write the listops preprocessing cache in {root / 'cache'}: "
                                            "Read-only file system. Set paths.cache_dir=<a writable folder with free "
                                            "space> (the data root itself may stay read-only)")
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_run_folder_refuses_other_data_on_resume_and_on_a_finished_rerun(tmp_path: Path) -> None:
    """Killed, then the data regenerated with another seed (another root here): the resume refuses with one line
    naming both identities instead of training on the new rows; rerun=true starts over on them; the finished run,
    rerun on the first data, refuses instead of printing a result of other data."""
    from lra_bench.config import PROJECT_ROOT
    from tests.conftest import TINY_RUN

    roots = {}
    for seed in (0, 1):
        roots[seed] = tmp_path / f"data{seed}"
        generate(roots[seed] / "listops-1000", {"train": 64, "val": 16, "test": 16}, seed=seed,
                 spec=ListOpsSpec(max_depth=3, max_args=3, min_length=5, max_length=40), progress=False)
    logs = tmp_path / "logs"

    def train(root: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lra_bench.train", *TINY_RUN, "trainer.max_epochs=2", "checkpoint_every_n_steps=2",
               f"paths.data_dir={root}", f"paths.log_dir={logs}", "+callbacks.kill._target_=tests.helpers.KillAtStep",
               "+callbacks.kill.step=3", f"+callbacks.kill.marker={logs}/killed", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)

    killed = train(roots[0])
    assert killed.returncode == -9, killed.stderr[-2000:]
    refused = train(roots[1])
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "was trained on data listops-" in line and f"(from {roots[0]})" in line
    assert f"(from {roots[1]})" in line and "rerun=true" in line and "Traceback" not in refused.stderr
    over = train(roots[1], "rerun=true")
    assert over.returncode == 0, over.stderr[-2000:]
    (folder,) = (logs / "runs").glob("*/*")
    assert json.loads((folder / "result.json").read_text())["global_step"] == 8  # 64 rows / 16, two epochs, from 0
    again = train(roots[0])
    assert again.returncode == 2 and "already finished" not in again.stdout + again.stderr, again.stderr[-2000:]
    assert f"(from {roots[1]})" in again.stderr.strip().splitlines()[-1]
