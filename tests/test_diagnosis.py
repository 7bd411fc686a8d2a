""""Did it learn?": real tiny training runs, one that cannot learn (ListOps with shuffled labels) and one that
does (an easy ListOps variant), through the chance diagnosis, into result.json-style results and the report."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from lra_bench import train as train_mod
from lra_bench.reporting import report
from lra_bench.training.diagnosis import ChanceDiagnosis, noise_threshold

SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
CHANCE = "++callbacks.chance._target_=lra_bench.training.diagnosis.ChanceDiagnosis"


def read_split(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return [(source, int(target)) for source, target in rows[1:]]


def write_listops_tree(root: Path, rows: dict[str, list[tuple[str, int]]]) -> Path:
    """``root/listops-1000/basic_{split}.tsv`` in the release's format (header, tab-separated, csv.writer)."""
    folder = root / "listops-1000"
    folder.mkdir(parents=True)
    for split, name in SPLIT_FILES.items():
        with open(folder / name, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["Source", "Target"])
            writer.writerows(rows[split])
    return root


@pytest.fixture(scope="module")
def shuffled_root(listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ListOps fixture with every split's labels permuted: the labels carry no information about the input."""
    source = listops_root / "lra_release" / "lra_release" / "listops-1000"
    rng = np.random.default_rng(0)
    rows = {}
    for split, name in SPLIT_FILES.items():
        original = read_split(source / name)
        labels = rng.permutation([t for _, t in original])
        rows[split] = [(s, int(t)) for (s, _), t in zip(original, labels)]
    return write_listops_tree(tmp_path_factory.mktemp("shuffled"), rows)


@pytest.fixture(scope="module")
def easy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An easy ListOps variant: ``[MAX d ]`` = d, one digit per row, so a tiny model learns it in a few epochs."""
    rng = np.random.default_rng(1)
    rows = {split: [(f"( ( [MAX {d} ) ] )", int(d)) for d in rng.integers(0, 10, n)]
            for split, n in (("train", 192), ("val", 40), ("test", 40))}
    return write_listops_tree(tmp_path_factory.mktemp("easy"), rows)


def fit(run_config, data: Path, out: Path, *overrides: str) -> tuple[ChanceDiagnosis, dict, object]:
    """A real tiny run (fit, then test the best checkpoint); the diagnosis callback and a result.json-like dict."""
    cfg = run_config(f"paths.data_dir={data}", f"paths.output_dir={out}", "trainer.max_epochs=4", "optimizer.lr=3e-3",
                     CHANCE, "++callbacks.chance.fraction=0.5", *overrides)
    datamodule, module, trainer = train_mod.build(cfg)
    trainer.fit(module, datamodule=datamodule)
    (test,) = trainer.test(module, datamodule=datamodule, ckpt_path="best", verbose=False)
    (diagnosis,) = [c for c in trainer.callbacks if isinstance(c, ChanceDiagnosis)]
    # what lra_bench.train writes once the lead's glue line (`result |= diagnosis.result()`) is in
    result = {"model": cfg.model.name, "task": cfg.task.name, "seed": cfg.seed, "test/acc": test["test/acc"],
              "experiment": None, "overrides": [], **diagnosis.result()}
    return diagnosis, result, trainer


@pytest.fixture(scope="module")
def runs(run_config_module, shuffled_root: Path, easy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    caplog_records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = caplog_records.append  # type: ignore[method-assign]
    logging.getLogger("lra_bench.training.diagnosis").addHandler(handler)
    try:
        out = tmp_path_factory.mktemp("runs")
        shuffled = fit(run_config_module, shuffled_root, out / "shuffled", "++callbacks.chance.on_chance=stop", "seed=1")
        warnings = [r.getMessage() for r in caplog_records if r.levelno == logging.WARNING]
        learned = fit(run_config_module, easy_root, out / "easy", "seed=2")
        warnings_after = [r.getMessage() for r in caplog_records if r.levelno == logging.WARNING]
    finally:
        logging.getLogger("lra_bench.training.diagnosis").removeHandler(handler)
    return {"shuffled": shuffled, "learned": learned, "warnings": warnings, "warnings_after": warnings_after}


@pytest.fixture(scope="module")
def run_config_module(listops_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``run_config`` for a module-scoped fixture (the conftest one is per test)."""
    from tests.conftest import TINY_RUN, compose_config

    def make(*overrides: str):
        return compose_config([*TINY_RUN, f"paths.data_dir={listops_root}", *overrides])

    return make


def test_the_shuffled_label_run_is_diagnosed_at_chance_once_and_stopped_early(runs: dict) -> None:
    diagnosis, result, trainer = runs["shuffled"]
    assert result["diagnosis"] == "at_chance" and result["diagnosis/at_chance"] == 1
    assert result["diagnosis/val_acc_best"] <= result["diagnosis/threshold"]
    assert result["diagnosis/chance_rate"] == pytest.approx(diagnosis.p0)
    # on_chance=stop: ended at the first check (half of 4 epochs x 6 steps), not at the end of the schedule
    assert result["diagnosis/stopped_early"] == 1 and trainer.global_step == 12 == result["diagnosis/flagged_at_step"]
    (warning,) = runs["warnings"]  # said once
    assert "within noise of chance" in warning and "lower learning rate" in warning and "warmup" in warning
    assert "another seed" in warning and "Stopping now" in warning


def test_the_learning_run_is_not_diagnosed_and_runs_its_whole_schedule(runs: dict) -> None:
    diagnosis, result, trainer = runs["learned"]
    assert result["diagnosis"] == "learning" and result["diagnosis/at_chance"] == 0
    assert result["diagnosis/val_acc_best"] > result["diagnosis/threshold"]
    assert result["diagnosis/stopped_early"] == 0 and "diagnosis/flagged_at_step" not in result
    assert trainer.global_step == 4 * 12  # 192 rows / batch 16, 4 epochs
    assert runs["warnings_after"] == runs["warnings"]  # no new warning


def test_the_chance_rate_comes_from_the_validation_label_counts(runs: dict, shuffled_root: Path) -> None:
    diagnosis = runs["shuffled"][0]
    labels = [t for _, t in read_split(shuffled_root / "listops-1000" / "basic_val.tsv")]
    counts = np.bincount(labels)
    assert diagnosis.p0 == pytest.approx(counts.max() / counts.sum()) and diagnosis.n == len(labels)
    assert diagnosis.threshold == pytest.approx(noise_threshold(diagnosis.p0, len(labels), 3.0))
    assert noise_threshold(0.5, 10_000, 3.0) == pytest.approx(0.515)  # 3 binomial standard errors of 10,000 draws


def test_the_report_marks_the_at_chance_run_and_the_mixed_cell(runs: dict, tmp_path: Path) -> None:
    shuffled, learned = runs["shuffled"][1], runs["learned"][1]
    for name, result in (("shuffled", shuffled), ("learned", learned)):
        (tmp_path / "logs" / name).mkdir(parents=True)
        (tmp_path / "logs" / name / "result.json").write_text(json.dumps(result))
    out = tmp_path / "report"
    assert report.main(["--runs", str(tmp_path / "logs"), "--bench", str(tmp_path / "none"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    ours = next(line for line in md.splitlines() if line.startswith("| **transformer**"))
    assert "(n=2)" in ours and "1 of 2 seeds at chance" in ours
    runs_table = md.split("## Runs")[1]
    at_chance = next(line for line in runs_table.splitlines() if line.startswith("| transformer | listops | 1 |"))
    assert "at chance" in at_chance
    learning = next(line for line in runs_table.splitlines() if line.startswith("| transformer | listops | 2 |"))
    assert "at chance" not in learning


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="on_chance"):
        ChanceDiagnosis(on_chance="halt")
    with pytest.raises(ValueError, match="fraction"):
        ChanceDiagnosis(fraction=0.0)


def test_no_wandb_alert_is_recorded_for_an_offline_run(offline_wandb: Path) -> None:
    """An offline W&B run would keep an alert and send it at `wandb sync`, hours late: alerts go to online runs only."""
    import time
    from types import SimpleNamespace

    from lra_bench.training.diagnosis import send_wandb_alert
    from lra_bench.training.loggers import finish_wandb, wandb_logger
    from tests.wandb_records import iter_records

    logger = wandb_logger(project="lra_bench", save_dir=str(offline_wandb / "run"), mode="offline")
    run_dir = Path(logger.experiment.dir).parent
    assert send_wandb_alert(SimpleNamespace(loggers=[logger]), "lra_bench: run at chance", "test") == []
    finish_wandb(0)
    (path,) = run_dir.glob("run-*.wandb")
    for _ in range(300):  # wandb-core writes the file after finish() returns
        kinds = [r.WhichOneof("record_type") for r in iter_records(path)]
        if "exit" in kinds:
            break
        time.sleep(0.2)
    assert "exit" in kinds and "alert" not in kinds


def test_the_noise_band_counts_only_the_rows_validated(run_config, shuffled_root: Path, tmp_path: Path) -> None:
    """``trainer.limit_val_batches=1`` validates the first batch (16 of the 40 rows): chance and its band are those
    16 rows' majority-class rate and binomial error, not the whole split's."""
    diagnosis, result, _ = fit(run_config, shuffled_root, tmp_path / "run", "trainer.limit_val_batches=1",
                               "trainer.max_epochs=2")
    first = [t for _, t in read_split(shuffled_root / "listops-1000" / "basic_val.tsv")][:16]
    counts = np.bincount(first)
    assert result["diagnosis/val_samples"] == 16 and diagnosis.n == 16
    assert result["diagnosis/chance_rate"] == pytest.approx(counts.max() / 16)
    assert result["diagnosis/threshold"] == pytest.approx(noise_threshold(counts.max() / 16, 16, 3.0))
    assert "16 validated rows of 40" in diagnosis.source
