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
        "budget.cell_seconds=3600", "peak.sizes=[512]", "peak.repeats=3", *overrides,
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


def test_medians_carry_their_spread_and_both_peaks_are_reported(tiny: dict) -> None:
    out = tiny["out"]
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in (r for r in rows if not r.get("skipped")):
        assert float(r["train_min_s"]) <= float(r["train_s"]) <= float(r["train_max_s"]) and r["repeats"] == "2"
        assert float(r["train_spread"]) >= 0 and r["noisy"] in ("True", "False") and r["speed_vs_transformer_unclear"]
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["peak_flops"] == max(meta["peak_start_flops"], meta["peak_end_flops"]) and meta["peak_margin"] == 0.10
    md = (out / "results.md").read_text()
    assert f"start {meta['peak_start_flops'] / 1e9:,.0f}, end {meta['peak_end_flops'] / 1e9:,.0f}" in md
    assert "median [slowest–fastest of the 2 timed steps]" in md
    s4d = next(r for r in tiny["rows"] if r["model"] == "s4d" and r["length"] == 64)
    lo, hi = s4d["tokens_per_s"] * s4d["train_s"] / s4d["train_max_s"], s4d["tokens_per_s"] * s4d["train_s"] / s4d["train_min_s"]
    assert f"| s4d | {s4d['tokens_per_s']:,.0f} [{lo:,.0f}–{hi:,.0f}]" in md


def spread_rows() -> list[dict]:
    """Made-up cells at one length: the Transformer's steps 0.9-1.1 s, one model overlapping it, one clearly faster
    and noisy (range 40% of its median)."""
    def row(model: str, median: float, lo: float, hi: float) -> dict:
        return {"model": model, "length": 1024, "tokens_per_s": 1024 / median, "train_s": median, "train_min_s": lo,
                "train_max_s": hi, "memory_mb": 10.0}
    return [row("transformer", 1.0, 0.9, 1.1), row("transformer_vanilla", 1.0, 0.95, 1.05), row("lru", 1.05, 1.0, 1.2),
            row("s4d", 0.5, 0.4, 0.6)]


def test_a_ratio_whose_ranges_overlap_is_marked_and_noisy_cells_are_flagged() -> None:
    rows = spread_rows()
    bench.add_ratios(rows, 1e12)
    by = {r["model"]: r for r in rows}
    assert by["lru"]["speed_vs_transformer_unclear"] and not by["s4d"]["speed_vs_transformer_unclear"]
    assert not by["transformer"]["speed_vs_transformer_unclear"]  # the reference against itself
    assert by["s4d"]["noisy"] and not by["lru"]["noisy"]  # (0.6 - 0.4) / 0.5 = 40% > 25%; 19% <= 25%
    md = bench.markdown(rows, [], {"device": "cpu", "precision": "fp32", "task": "text", "batch": 1, "repeats": 3,
                                   "warmup": 1, "peak_flops": 1e12})
    assert "| lru | 975 [853–1,024] (0.95x?/0.95x?) |" in md
    assert "| s4d | 2,048 [1,707–2,560] noisy (2.00x/2.00x) |" in md


def test_start_and_end_peaks_further_apart_than_the_margin_are_reported() -> None:
    from lra_bench.benchmarks.peak import compare, describe

    steady = compare({"peak_flops": 170e9, "threads": 2}, {"peak_flops": 160e9})
    assert steady["peak_stable"] and steady["peak_flops"] == 170e9 and "WARNING" not in describe(steady)
    assert "start 170, end 160, gap 6%, margin 10%" in describe(steady)
    loaded = compare({"peak_flops": 170e9}, {"peak_flops": 110e9})
    assert not loaded["peak_stable"] and loaded["peak_flops"] == 170e9  # the larger: it can only lower an MFU
    assert "differ by 35% > 10%" in describe(loaded)


def test_the_peak_is_the_best_of_its_sizes_in_a_fresh_process() -> None:
    from lra_bench.benchmarks.peak import peak_in_child

    result = peak_in_child("cpu", sizes=[128, 256], repeats=2)
    assert set(result["per_size"]) == {"128", "256"} and result["peak_flops"] == max(result["per_size"].values())
    assert result["threads"] >= 1


def test_values_are_sane(tiny: dict) -> None:
    rows = {(r["model"], r["length"]): r for r in tiny["rows"]}
    assert not [r for r in rows.values() if "skipped" in r], [(r["model"], r["length"], r.get("skipped")) for r in rows.values()]
    for r in rows.values():
        assert r["train_s"] > 0 and r["train_min_s"] <= r["train_s"] <= r["train_max_s"]
        assert r["tokens_per_s"] > 0 and r["infer_tokens_per_s"] > 0 and r["memory_mb"] >= 0
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] <= 1, r.get("mfu_flag")
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
    assert "skipped" in rows[0] and "model.net.backbone.n_heads=3: must divide" in rows[0]["skipped"]  # the option check


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


# --- the LRA and state space models in the bench; a user's model without a preset --------------------

def user_model_dir(root: Path) -> Path:
    """A config folder outside the repository with one model, ``my_transformer``, and no preset for it."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "my_transformer.yaml").write_text("defaults:\n  - transformer\nname: my_transformer\n")
    return root


def test_new_models_and_a_user_model_without_a_preset_run(tmp_path: Path) -> None:
    """Linformer and S5 from their presets; a model found only on the search path, with no lra/<model>-<task>
    preset, falls back to task=<task> model=<name> and the output says so."""
    conf = user_model_dir(tmp_path / "conf")
    cfg = bench_config(tmp_path / "out", "models=[linformer,s5,my_transformer]", "lengths=[64]", "flops=false",
                       "inference=false", f"searchpath=[file://{conf}]")
    result = bench.run(cfg)
    rows = {r["model"]: r for r in result["rows"]}
    assert not [r for r in rows.values() if "skipped" in r], rows
    assert all(r["tokens_per_s"] > 0 and r["params_mb"] > 0 for r in rows.values())
    note = next(n for n in result["meta"]["notes"] if n.startswith("my_transformer"))
    assert "no preset lra/my_transformer-listops" in note and "task=listops model=my_transformer" in note
    assert note in (tmp_path / "out" / "results.md").read_text()


def test_an_unknown_model_is_marked_and_the_run_goes_on(tmp_path: Path) -> None:
    rows = bench.run(bench_config(tmp_path, "models=[no_such_model]", "lengths=[64,128]", "flops=false"))["rows"]
    assert [r["skipped"].startswith("not built") and "no_such_model" in r["skipped"] for r in rows] == [True, True]


def test_length_overrides_size_each_model_by_the_cell_length() -> None:
    from lra_bench.benchmarks.model_configs import length_overrides, parameter_megabytes, resolve

    expected = {
        "transformer": ["model.net.backbone.max_length=1025"],  # + CLS (pooling: cls)
        "synthesizer": ["model.net.backbone.max_length=1025"],
        "sinkhorn": ["model.net.backbone.max_length=1024"],  # mean pooling: no CLS
        "luna": ["model.net.backbone.max_length=1025"],
        "mega": ["model.net.backbone.max_positions=1024"],
        "s5": [],
    }
    for model, extra in expected.items():
        resolved, cfg = resolve(model, "text")
        assert resolved.overrides == (f"experiment=lra/{model}-text",) and resolved.note is None
        assert length_overrides(cfg, 1024) == ["task.max_length=1024", *extra], model
    # Synthesizer's random logits are H L^2 per layer: 4 layers x 4 heads x 4 bytes
    resolved, cfg = resolve("synthesizer", "text")
    mb = {n: parameter_megabytes([*resolved.overrides, *length_overrides(cfg, n)]) for n in (1024, 2048)}
    assert mb[2048] - mb[1024] == pytest.approx(4 * 4 * (2049**2 - 1025**2) * 4 / 2**20, rel=1e-6)


def test_budget_predicts_the_process_memory_with_the_parameters_of_the_length() -> None:
    from lra_bench.benchmarks.budget import skip_reason

    measured = [{"length": 1024, "train_s": 1.0, "memory_mb": 100.0, "held_mb": 300.0, "params_mb": 70.0}]
    # step memory 100 -> 400 (quadratic by default), held 300 + the parameters' growth 270 - 70
    reason, predicted = skip_reason(measured, 2048, quadratic=True, steps=5, cell_seconds=600, memory_mb=800,
                                    params_mb=270.0)
    assert predicted["predicted_process_mb"] == pytest.approx(900.0) and reason == "predicted 900 MB > budget 800 MB"
    assert skip_reason(measured, 2048, quadratic=True, steps=5, cell_seconds=600, memory_mb=1000, params_mb=270.0)[0] is None
    assert skip_reason(measured, 2048, quadratic=True, steps=5, cell_seconds=10, memory_mb=1000)[0].startswith("predicted 20 s")
    # nothing measured yet: only parameters (and gradients) that cannot fit stop a cell
    first = dict(quadratic=True, steps=5, cell_seconds=600, memory_mb=1e-9, available_mb=8000.0)
    assert skip_reason([], 16384, params_mb=3000.0, **first)[0] is None
    assert "parameters and their gradients 34,000 MB" in skip_reason([], 16384, params_mb=17000.0, **first)[0]


def lra_rows() -> list[dict]:
    """Made-up measurements at 1K/2K/4K: a quadratic Transformer, a linear Linformer, a slow Reformer."""
    rows = []
    for n in (1024, 2048, 4096):
        k = n // 1024
        for model, speed, memory in (("transformer", 1000 / k**2, 10 * k**2), ("transformer_vanilla", 800 / k**2, 12 * k**2),
                                     ("linformer", 2000 / k, 5 * k), ("reformer", 600 / k, 8 * k)):
            rows.append({"model": model, "length": n, "tokens_per_s": speed * n, "train_s": 1 / speed,
                         "memory_mb": float(memory)})
    return rows


def test_lra_efficiency_table_puts_lra_published_ratios_beside_ours() -> None:
    rows = lra_rows()
    bench.add_ratios(rows, 1e12)
    md = bench.markdown(rows, bench.check_targets(rows), {"device": "cpu", "precision": "fp32", "task": "text", "batch": 1,
                                                          "repeats": 3, "warmup": 1, "peak_flops": 1e12})
    section = md[md.index("LRA's efficiency table shape"):]
    linformer = [line for line in section.splitlines() if line.startswith("| linformer |")]
    # speed: ours x SDPA / x vanilla, then LRA's bracket (1.2x at 1K, 5.5x at 4K) and Mega Table 2's 5.5x
    assert linformer[0].startswith("| linformer | 2.00x / 2.50x | 1.2x | 4.00x / 5.00x | 1.9x | 8.00x / 10.00x | 5.5x | 5.5x |")
    # memory: LRA's GB over its Transformer's (0.99 / 9.48 at 4K), growth exponents 1 (ours) and LRA's
    assert "| 0.10x |" in linformer[1] and "| 1.00 | 0.71 | 0.10x |" in linformer[1]
    targets = {t["claim"]: t for t in bench.check_targets(rows)}
    assert targets["linformer speed vs transformer at 4096"]["measured"] == pytest.approx(8.0)
    reformer = targets["reformer speed vs transformer at 4096"]  # LRA measured Reformer slower: its 0.8x is the goal
    assert reformer["goal"] == ">= 0.8x" and "LRA measured 0.8x" in reformer["note"] and reformer["met"]


def test_an_own_model_alone_gets_no_mega_goals_and_a_hint_for_the_ratio_columns() -> None:
    """make bench ARGS="models=[bi_hyena]": no "mega_chunk ... not measured" goal rows; the – ratios say how to
    get them. With both Transformers in the grid, no hint."""
    meta = {"device": "cpu", "precision": "fp32", "task": "text", "batch": 1, "repeats": 3, "warmup": 1, "peak_flops": 1e12}
    rows = [{"model": "bi_hyena", "length": n, "tokens_per_s": 1000.0 * n, "train_s": 1e-3, "memory_mb": 5.0}
            for n in (1024, 4096)]
    bench.add_ratios(rows, 1e12)
    assert bench.check_targets(rows) == []
    md = bench.markdown(rows, bench.check_targets(rows), meta)
    assert "mega_chunk" not in md and "| target | goal |" not in md
    assert "| bi_hyena | 1,024,000 (–/–) |" in md
    assert ("transformer and transformer_vanilla are not in this grid, so their ratios show –. Add them: "
            "models=[bi_hyena,transformer,transformer_vanilla]") in md
    both = lra_rows()
    bench.add_ratios(both, 1e12)
    assert "not in this grid" not in bench.markdown(both, bench.check_targets(both), meta)
    assert not [t for t in bench.check_targets(both) if t["claim"].startswith("mega_chunk")]


def test_every_model_config_is_in_the_default_bench() -> None:
    from lra_bench.config import CONFIG_DIR

    cfg = compose_config([], config_name="bench")
    models = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")}
    assert models | {"transformer_vanilla", "transformer_fused"} == set(cfg.models)


@pytest.mark.slow
def test_every_default_bench_model_runs_a_tiny_cell(tmp_path: Path) -> None:
    models = ",".join(compose_config([], config_name="bench").models)
    cfg = bench_config(tmp_path, f"models=[{models}]", "lengths=[64]", "batch=1", "repeats=1", "flops=false",
                       "inference=false", 'model_overrides=["model.net.backbone.n_layers=1"]')
    rows = bench.run(cfg)["rows"]
    assert not [(r["model"], r["skipped"]) for r in rows if "skipped" in r]
