"""protocol_curves: scratch and SPT runs of one sweep on one x axis (both stages' steps), their table and the
SPT - scratch difference, said to be within the noise when the seeds' ranges overlap."""

from __future__ import annotations

import json
from pathlib import Path

from lra_bench.reporting import protocol_curves


def write_run(folder: Path, protocol: str, seed: int, val: list[tuple[int, float]], test: float) -> None:
    folder.mkdir(parents=True)
    result = {"task": "listops", "model": "transformer", "experiment": "quick", "seed": seed, "protocol": protocol,
              "val/acc_best": max(v for _, v in val), "test/acc": test, "global_step": val[-1][0]}
    if protocol == "spt":
        result |= {"pretrain/steps": 300, "budget/total_steps": 300 + val[-1][0]}
        stage_one = folder / "pretrain"
        stage_one.mkdir()
        (stage_one / "result.json").write_text(json.dumps({"task": "listops", "model": "transformer", "stage": "pretrain"}))
    else:
        result["budget/total_steps"] = None
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "csv").mkdir()
    rows = ["epoch,step,train/loss,val/acc"] + [f"0,{step},,{acc}" for step, acc in val] + ["0,5,0.7,"]
    (folder / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_spt_curves_start_after_stage_one_and_overlapping_seeds_are_called_noise(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate([(0.40, 0.42), (0.41, 0.43), (0.39, 0.41)], start=1):
        write_run(tmp_path / f"scratch-{seed}", "scratch", seed, [(300, a), (600, b)], b)
        write_run(tmp_path / f"spt-{seed}", "spt", seed, [(300, a + 0.01)], b + 0.01)
    runs = protocol_curves.read_runs(tmp_path)
    assert len(runs) == 6  # the stage-1 results are parts of their runs, not runs
    spt = next(r for r in runs if r["protocol"] == "spt")
    assert spt["curve"] == [(600, spt["curve"][0][1])]  # stage 2's step 300 is the run's step 600
    groups = protocol_curves.group(runs)
    text = protocol_curves.table(groups)
    assert "| quick | transformer | scratch | 3 | 600 | 42.00 ± 1.00 [41.00–43.00] | 42.00 ± 1.00 [41.00–43.00] |" in text
    assert "| quick | transformer | +1.00 | overlap: within the seeds noise |" in text
    protocol_curves.plot(groups, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_separated_ranges_are_called_apart(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_run(tmp_path / f"scratch-{seed}", "scratch", seed, [(600, 0.30)], 0.30 + seed / 100)
        write_run(tmp_path / f"spt-{seed}", "spt", seed, [(300, 0.50)], 0.50 + seed / 100)
    text = protocol_curves.table(protocol_curves.group(protocol_curves.read_runs(tmp_path)))
    assert "| quick | transformer | +20.00 | apart |" in text
