"""The quick default (`make lra-task`, conf/experiment/quick.yaml) gives the same first result on any machine: a step
budget, never a time limit that a loaded machine hits first, and a pinned intra-op thread count; at reduced size,
runs under other thread counts and loader workers end bit-for-bit equal (README section 2)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from data_prep.listops import ListOpsSpec, generate
from lra_bench import train as train_mod
from tests.conftest import compose_config

THREADS = torch.get_num_threads()


def seconds(max_time: str) -> int:
    days, hours, minutes, secs = (int(p) for p in max_time.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


@pytest.mark.parametrize("experiment", ["quick", "quick_pathfinder"])
def test_the_quick_budget_is_steps_with_only_a_far_off_time_limit(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.trainer.max_epochs > 0 or cfg.trainer.max_steps > 0
    # the busy machine took 1.9 s a step: 3,130 steps need about 100 minutes there
    assert cfg.trainer.max_time is None or seconds(cfg.trainer.max_time) >= 2 * 3600
    assert cfg.torch_threads == 2


def test_torch_threads_out_of_range_stops_with_one_line() -> None:
    from lra_bench.errors import ConfigError
    from lra_bench.train import pin_threads

    with pytest.raises(ConfigError, match=r"torch_threads=0: must be null .* or an integer >= 1"):
        pin_threads(compose_config(["torch_threads=0"]))


def run_quick(data: Path, out: Path, threads: int, workers: int) -> tuple[dict, list[list[str]], int]:
    """The quick default at reduced size, started with torch at ``threads`` threads (another machine's default)."""
    torch.set_num_threads(threads)
    try:
        cfg = compose_config(["experiment=quick", "model=mega", f"paths.data_dir={data}", f"paths.output_dir={out}",
                              "logger=csv", "~callbacks.progress_bar", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                              f"task.datamodule.num_workers={workers}"])
        result = train_mod.train(cfg)
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(THREADS)
    with open(out / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keys = ("step", "train/loss", "val/acc", "val/loss", "test/loss")
    losses = [[r.get(k, "") for k in keys] for r in rows if any(r.get(k) for k in keys[1:])]
    return result, losses, threads_used


@pytest.mark.slow
def test_the_quick_default_is_bit_for_bit_equal_across_thread_counts_and_loader_workers(tmp_path: Path) -> None:
    # the quick data's generator and lengths, 3 batches of 64 an epoch (make data-quick: 20,000/1,000/1,000 rows)
    spec = ListOpsSpec(max_depth=5, max_args=5, min_length=20, max_length=120)
    generate(tmp_path / "data" / "listops-quick", {"train": 192, "val": 64, "test": 64}, seed=0, spec=spec,
             progress=False)
    runs = [run_quick(tmp_path / "data", tmp_path / f"run{i}", threads, workers)
            for i, (threads, workers) in enumerate([(1, 0), (3, 1)])]
    for result, _, threads_used in runs:
        assert threads_used == 2  # torch_threads: 2, whatever the machine's default
        assert result["global_step"] == 6
    (first, first_losses, _), (second, second_losses, _) = runs
    assert len(first_losses) >= 6 and first_losses == second_losses  # every logged loss, as written, step by step
    for key in ("val/acc_best", "test/acc", "test/loss"):
        assert first[key] == second[key], key


@pytest.mark.parametrize("best_checkpoint, label", [("/run/checkpoints/best.ckpt", "test accuracy (best ckpt)"),
                                                    ("", "test accuracy (final weights)")])
def test_the_summary_says_which_weights_were_tested(best_checkpoint: str, label: str, capsys) -> None:
    from lra_bench.training.summary import print_summary

    print_summary({"task": "listops", "model": "mega", "test/acc": 0.5, "best_checkpoint": best_checkpoint})
    assert label in capsys.readouterr().out
