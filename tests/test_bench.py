"""The efficiency benchmark on a tiny CPU grid: every output file with sane values, and budget skipping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lra_bench.benchmarks import bench
from tests.conftest import compose_config

def bench_config(tmp_path: Path, *overrides: str):
    return compose_config([
        "preset_task=listops", "models=[mega_chunk,transformer,transformer_vanilla,transformer_fused,s4d]", "lengths=[64,512]",
        "batch=2", "warmup=1", "repeats=2", f"out_dir={tmp_path}", 'model_overrides=["model.d_model=16","model.net.backbone.n_layers=1","task.max_length=512"]',
        "budget.cell_seconds=600", *overrides,
    ], config_name="bench")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    result = bench.run(bench_config(out))
    return {"out": out, **result}


def test_every_output_file_is_written(tiny: dict) -> None:
    out = tiny["out"]
    for name in ("results.csv", "results.json", "results.md", "time_vs_length.png", "memory_vs_length.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "time_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and {r["model"] for r in rows} == {"mega_chunk", "transformer", "transformer_vanilla", "transformer_fused", "s4d"}
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["peak_flops"] > 1e9 and len(saved["targets"]) == 6
    md = (out / "results.md").read_text()
    assert "| mega_chunk |" in md and "| target | goal | measured | met |" in md


def test_values_are_sane(tiny: dict) -> None:
    rows = {(r["model"], r["length"]): r for r in tiny["rows"]}
    assert not [r for r in rows.values() if "skipped" in r], [(r["model"], r["length"], r.get("skipped")) for r in rows.values()]
    for r in rows.values():
        assert r["train_s"] > 0 and r["train_min_s"] <= r["train_s"] <= r["train_max_s"]
        assert r["tokens_per_s"] > 0 and r["infer_tokens_per_s"] > 0 and r["memory_mb"] >= 0
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] < 5
        assert r["speed_vs_transformer"] > 0
        # a tiny model's step needs little memory of its own, whatever the parent (pytest) holds
        assert r["memory_mb"] < 300, r
    assert rows[("transformer", 64)]["speed_vs_transformer"] == pytest.approx(1.0)
    # FLOPs grow with length; the vanilla Transformer's memory grows with it too (it holds (L, L) weights)
    for model in ("mega_chunk", "transformer", "transformer_vanilla", "transformer_fused", "s4d"):
        assert rows[(model, 512)]["flops_per_step"] > rows[(model, 64)]["flops_per_step"]
    assert rows[("mega_chunk", 512)]["speed_vs_transformer_fused"] > 0
    for model in ("transformer", "transformer_vanilla"):
        assert rows[(model, 512)]["memory_mb"] > rows[(model, 64)]["memory_mb"]


def test_cells_over_the_budget_are_skipped_and_marked(tmp_path: Path) -> None:
    cfg = bench_config(tmp_path, "models=[transformer]", "lengths=[64,128,256]", "budget.cell_seconds=1e-6", "flops=false")
    rows = bench.run(cfg)["rows"]
    assert "skipped" not in rows[0]  # nothing to predict from yet
    assert rows[1]["skipped"].startswith("predicted") and "budget" in rows[1]["skipped"]
    assert rows[2]["skipped"] == "skipped at L=128"
    md = (tmp_path / "results.md").read_text()
    assert "skipped" in md
    cfg = bench_config(tmp_path / "mem", "models=[transformer]", "lengths=[64,128]", "budget.memory_mb=1e-9", "flops=false")
    assert "MB > budget" in bench.run(cfg)["rows"][1]["skipped"]


def test_a_failing_cell_is_marked_not_fatal(tmp_path: Path) -> None:
    cfg = bench_config(tmp_path, "models=[transformer]", "lengths=[64]", 'model_overrides=["model.net.backbone.n_heads=3"]', "flops=false")
    rows = bench.run(cfg)["rows"]
    assert "skipped" in rows[0] and "divisible" in rows[0]["skipped"]


@pytest.mark.slow
def test_bench_s4_prints_no_ratio_without_the_reference(tmp_path: Path, capsys) -> None:
    """A ratio needs both sides measured in this run: without --reference the targets say 'reference not run'."""
    from lra_bench.benchmarks import s4 as bench_s4

    assert bench_s4.main(["--lengths", "64", "--batch", "1", "--warmup", "0", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert {r["model"] for r in result["rows"]} == {"s4", "s4d"}
    assert [t[3] for t in result["targets"]] == ["reference not run", "reference not run"]
    assert "reference not run" in capsys.readouterr().out
    assert bench_s4.main(["--reference", str(tmp_path / "nope.py"), "--out", str(tmp_path)]) == 2


def test_bench_s4_ratios_come_from_cells_of_the_same_run() -> None:
    from lra_bench.benchmarks.s4 import targets

    rows = [{"model": "s4", "length": 1024, "tokens_per_s": 5000.0, "peak_rss_mb": 500.0},
            {"model": "ref_s4", "length": 1024, "tokens_per_s": 1000.0, "peak_rss_mb": 2500.0},
            {"model": "s4d", "length": 1024, "tokens_per_s": 3000.0, "peak_rss_mb": 300.0},
            {"model": "ref_s4d", "length": 1024, "skipped": "over 600 s"}]
    checks = {c[0].split(" (")[0]: c for c in targets(rows)}
    assert checks["s4 tokens/s at 1024 vs the official block"][1:] == (5.0, ">= 4.0x", "yes")
    assert checks["s4 peak RSS at 1024 vs the official block"][1:] == (0.2, "<= 0.25x", "yes")
    assert checks["s4d vs the official block at 1024"][3] == "a side was skipped"
