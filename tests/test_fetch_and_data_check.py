"""Fetching without a network prints the manual steps; data_check reports every task."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep import fetch
from lra_bench.data_check import check
from tests.conftest import compose_config
from tests.fixtures import write_release_tasks


@pytest.mark.parametrize("task, expected", [("text", "aclImdb_v1.tar.gz"), ("image", "cifar-10-python.tar.gz"),
                                            ("retrieval", "OpenNLPLab/lra")])
def test_fetch_without_network_prints_the_manual_steps(task: str, expected: str, tmp_path: Path, capsys) -> None:
    url = fetch.SOURCES[task][0] if task in fetch.SOURCES else "https://huggingface.co"
    if fetch.reachable(url):
        pytest.skip("this machine has a network: the download path would run for real")
    assert fetch.main(["--task", task, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no network" in err and expected in err and str(tmp_path) in err


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    write_release_tasks(root)
    return root


@pytest.mark.parametrize("task, classes, max_len", [("text", 2, 64), ("retrieval", 2, 64), ("image", 10, 1024),
                                                    ("pathfinder", 2, 1024), ("pathx", 2, 16384)])
def test_data_check_reports_every_task(root: Path, task: str, classes: int, max_len: int) -> None:
    extra = ["task.datamodule.val_size=8"] if task == "image" else []
    cfg = compose_config([f"task={task}", f"paths.data_dir={root}", "task.datamodule.num_workers=0",
                          f"task.max_length={max_len}", *extra], config_name="data_check")
    report = check(cfg)
    assert report["task"] == task and report["num_classes"] == classes and set(report["splits"]) == {"train", "val", "test"}
    for split in report["splits"].values():
        assert split["n"] > 0 and len(split["label_counts"]) == classes and sum(split["label_counts"]) == split["n"]
        assert 0 < split["mean_len"] <= split["max_len"] <= max_len
