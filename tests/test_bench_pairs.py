"""bench-attention and bench-ssm: ours beside each reference package, cell by cell, ratios only within one run."""

from __future__ import annotations

import json
import pkgutil
from pathlib import Path

import pytest
import torch

from lra_bench.benchmarks import attention, pairs, ssm
from lra_bench.benchmarks import references as references_pkg

TINY = ["--d-model", "32", "--n-heads", "2", "--warmup", "0", "--repeats", "1", "--batch", "1"]


def test_pair_runner_times_both_sides_of_two_references_in_one_run(tmp_path: Path, capsys) -> None:
    """Real subprocess cells: local-attention and linformer beside ours at one tiny length."""
    args = ["--pairs", "local", "linformer", "--lengths", "64", "--target-length", "64", "--out", str(tmp_path), *TINY]
    assert attention.main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = result["rows"]
    run = result["meta"]["run"]
    assert [(r["name"], r["side"]) for r in rows] == [("local", "ours"), ("local", "theirs"), ("linformer", "ours"),
                                                      ("linformer", "theirs")]  # the two sides of a pair adjacent
    for r in rows:
        assert r["run"] == run and "skipped" not in r, r
        assert r["tokens_per_s"] > 0 and r["memory_mb"] >= 0 and r["train_min_s"] <= r["train_s"] <= r["train_max_s"]
        assert r["reference"] == result["references"][r["name"]]
        assert r["reference_installed"] == r["reference"].split("==")[1]
    by = {(r["name"], r["side"]): r for r in rows}
    for ratio in result["ratios"]:
        ours, theirs = by[(ratio["name"], "ours")], by[(ratio["name"], "theirs")]
        assert ratio["speed"] == pytest.approx(ours["tokens_per_s"] / theirs["tokens_per_s"])
    assert [t["claim"] for t in result["targets"]] == ["local (ours) tokens/s vs local-attention==1.11.2 at 64",
                                                       "linformer (ours) tokens/s vs linformer==0.2.3 at 64"]
    assert all(t["measured"] is not None for t in result["targets"])
    md = (tmp_path / "results.md").read_text()
    assert "| local vs local-attention==1.11.2 | 64 |" in md and md in capsys.readouterr().out


def rows_of(run: str, *cells: tuple[str, str, int, float | None]) -> list[dict]:
    """Rows (name, side, length, tokens/s); tokens/s None = skipped."""
    out = []
    for name, side, length, tps in cells:
        row = {"run": run, "kind": "pair", "name": name, "side": side, "length": length}
        row |= {"skipped": "over 600 s"} if tps is None else {"tokens_per_s": tps, "memory_mb": tps / 10}
        out.append(row)
    return out


def test_ratios_come_only_from_cells_of_the_same_run() -> None:
    rows = rows_of("now", ("linformer", "ours", 4096, 300.0), ("linformer", "theirs", 4096, 100.0),
                   ("local", "ours", 4096, 300.0), ("performer", "ours", 4096, 300.0), ("performer", "theirs", 4096, None))
    rows += rows_of("yesterday", ("local", "theirs", 4096, 100.0), ("performer", "theirs", 4096, 100.0))
    ratios = {r["name"]: r for r in pairs.pair_ratios(rows, "now")}
    assert ratios["linformer"]["speed"] == pytest.approx(3.0) and ratios["linformer"]["memory"] == pytest.approx(3.0)
    assert ratios["local"]["speed"] is None and ratios["local"]["note"] == "reference not run"
    assert ratios["performer"]["speed"] is None and ratios["performer"]["note"] == "skipped: reference over 600 s"
    targets = pairs.pair_targets(list(ratios.values()), ["linformer", "local", "bigbird"],
                                 {"linformer": "linformer==0.2.3", "local": "local-attention==1.11.2", "bigbird": "hf"}, 4096)
    assert [(t["measured"], t["met"], t["note"]) for t in targets] == [
        (pytest.approx(3.0), True, None), (None, False, "reference not run"), (None, False, "not in the grid")]
    # bench-ssm's comparison with our S4D: the same rule
    rows = [{"run": "now", "kind": "layer", "name": "s5", "side": "ours", "length": 64, "tokens_per_s": 2.0, "memory_mb": 1.0},
            {"run": "old", "kind": "layer", "name": "s4d", "side": "ours", "length": 64, "tokens_per_s": 1.0, "memory_mb": 1.0}]
    versus = ssm.baseline_ratios(rows, "now", ["layer"], ["s5"])
    assert versus[0]["speed"] is None and versus[0]["note"] == "S4D not run"


def test_every_pairing_module_is_benchmarked() -> None:
    modules = {m.name for m in pkgutil.iter_modules(references_pkg.__path__)}
    assert set(attention.PAIRS) | set(ssm.PAIRS) == modules


def test_forward_passes_none_for_the_mask_ours_requires() -> None:
    """Our Reformer attention takes (x, mask); HF's wrapper takes x alone: both called as f(x)."""
    from lra_bench.benchmarks.references import reformer

    ours, theirs = reformer.build(64, 16, 2)
    x = torch.randn(1, 64, 16)
    assert pairs.forward_fn(ours)(x).shape == pairs.forward_fn(theirs)(x).shape == (1, 64, 16)


def test_ssm_groups_build_the_text_presets_and_equal_single_layers() -> None:
    from lra_bench.benchmarks.model_configs import compose_train

    sizes = {}
    for group in ("backbone", "layer"):
        for model in ssm.COMPARED:
            backbone = compose_train(ssm.model_overrides(model, group, 256, 64, [])).model.net.backbone
            sizes[(group, model)] = (backbone.n_layers, backbone.d_model, backbone.d_state)
            if model == "s5" and group == "layer":
                assert backbone.blocks == 4  # the preset's block size 192 / 12 = 16 kept
    assert sizes[("backbone", "s4d")] == (6, 256, 64) and sizes[("backbone", "s5")] == (6, 256, 192)
    assert sizes[("backbone", "lru")] == (6, 256, 192)
    assert {sizes[("layer", m)] for m in ssm.COMPARED} == {(1, 256, 64)}


@pytest.mark.slow
def test_bench_ssm_runs_its_pairs_and_the_s4d_comparison(tmp_path: Path) -> None:
    args = ["--lengths", "64", "--target-length", "64", "--layer-d-model", "16", "--layer-state", "16", "--groups", "layer",
            "--out", str(tmp_path), *TINY]
    assert ssm.main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert not [r for r in result["rows"] if "skipped" in r]
    assert {r["name"] for r in result["ratios"]} == {"s5", "mamba"}
    assert {(v["group"], v["name"]) for v in result["versus_s4d"] if v["speed"] is not None} == {
        ("layer", "s4d"), ("layer", "s5"), ("layer", "lru")}
    assert len(result["targets"]) == 4 and all(t["measured"] is not None for t in result["targets"])


@pytest.mark.slow
def test_bench_attention_runs_every_pair_at_a_small_length(tmp_path: Path) -> None:
    """768 tokens: BigBird's block-sparse layout needs more than (5 + 2 r) blocks of 64."""
    args = ["--lengths", "768", "--target-length", "768", "--out", str(tmp_path), *TINY]
    assert attention.main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert not [(r["name"], r["side"], r["skipped"]) for r in result["rows"] if "skipped" in r]
    assert all(t["measured"] is not None for t in result["targets"])
