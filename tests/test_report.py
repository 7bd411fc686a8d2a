"""The report: published rows as printed, our averages, the tables built from result.json files with their seed
and chance flags, the HTML page, and the accuracy-vs-speed figure's data and caption."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lra_bench.reporting.html import markdown_to_html
from lra_bench.reporting.plots import score_vs_speed
from lra_bench.reporting.published import FAIL, PUBLISHED, five_task_avg, rows_for
from lra_bench.reporting.report import fmt_cell, lra_table, table_rows
from lra_bench.reporting.runs import at_chance


def run(model: str, task: str, acc: float, seed: int = 1) -> dict:
    return {"model": model, "task": task, "seed": seed, "test/acc": acc, "experiment": f"lra/{model}-{task}", "overrides": []}


def test_published_rows_keep_the_avg_their_paper_prints() -> None:
    by_name = {p.name: p for p in PUBLISHED}
    assert by_name["Transformer"].avg == 54.39  # LRA Table 1: the five non-failed tasks, not 53.66 (✗ as 50)
    assert by_name["Transformer (Mega authors' reproduction)"].avg == 59.24
    for p in PUBLISHED:
        assert len(p.scores) == 6 and p.source
        computed = five_task_avg(p.scores) if p.scores[-1] is FAIL else sum(p.scores) / 6
        if p.name == "Sinkhorn Transformer":  # the source contradicts itself: 51.29 printed, 51.48 from its scores
            assert f"{computed:.2f}" in p.note
            continue
        assert computed == pytest.approx(p.avg, abs=0.011), p.name  # the printed Avg is the papers' rounding
        assert p.avg_printed == ("computed here" not in p.note), p.name  # a computed Avg says so
    assert [p.name for p in PUBLISHED if not p.avg_printed] == ["LRU"]  # the LRU paper's LRA table prints no Avg
    assert "unverified" in by_name["LRU"].note
    assert {p.model for p in rows_for({"bigbird"})} == {"bigbird"}


def test_the_table_prints_published_avgs_as_printed_and_ours_with_both_averages() -> None:
    runs = [run("transformer", t, a) for t, a in zip(("listops", "text", "retrieval", "image", "pathfinder"), (0.36, 0.64, 0.58, 0.42, 0.70))]
    rows = table_rows(runs)
    assert rows[0]["avg"] is None and rows[0]["avg5"] == pytest.approx(54.0)
    table = lra_table(rows)
    ours = next(line for line in table.splitlines() if line.startswith("| **transformer**"))
    assert ours.endswith("| – | 54.00 | ours |")
    lra = next(line for line in table.splitlines() if line.startswith("| Transformer | published"))
    assert "| ✗ | – | 54.39 |" in lra and "Tay et al." in lra
    s4 = next(line for line in table.splitlines() if line.startswith("| S4-v2 | published"))
    assert "| 96.35 | 86.09 | – |" in s4


# --- seed variance and chance flags --------------------------------------------------------------------------

def test_cells_show_mean_std_and_n_and_flag_seeds_that_disagree_by_more_than_the_spread() -> None:
    runs = [run("mega", "listops", a, seed=s) for s, a in enumerate((0.50, 0.55, 0.61))]
    (row,) = table_rows(runs)
    mean, std, n = row["listops"]
    assert (mean, n) == (pytest.approx(55.333, abs=1e-3), 3) and std == pytest.approx(5.508, abs=1e-3)
    assert row["flags"]["listops"] == ["seeds disagree: spread 11.0 > 5 points"]
    assert fmt_cell(row["listops"], row["flags"]["listops"]) == "55.33 ± 5.51 (n=3) ⚠ seeds disagree: spread 11.0 > 5 points"
    (relaxed,) = table_rows(runs, spread=12.0)
    assert relaxed["flags"]["listops"] == []


def test_cells_flag_some_seeds_at_chance_and_mark_cells_all_at_chance() -> None:
    runs = [run("mega", "pathfinder", 0.50, seed=1) | {"diagnosis": "at_chance"},
            run("mega", "pathfinder", 0.51, seed=2) | {"diagnosis": "learning"},
            run("mega", "pathfinder", 0.93, seed=3) | {"diagnosis": "learning"},
            run("s4", "pathfinder", 0.50, seed=1) | {"diagnosis": "at_chance"},
            run("s4", "pathx", 0.50, seed=1) | {"diagnosis": "at_chance"}, run("s4", "pathx", 0.50, seed=2) | {"diagnosis": "at_chance"}]
    rows = {r["model"]: r for r in table_rows(runs)}
    assert rows["mega"]["flags"]["pathfinder"] == ["1 of 3 seeds at chance", "seeds disagree: spread 43.0 > 5 points"]
    assert rows["s4"]["flags"] == {"pathfinder": ["at chance"], "pathx": ["all 2 seeds at chance"]}
    table = lra_table(list(rows.values()))
    assert "| 50.00 ⚠ at chance | 50.00 ± 0.00 (n=2) ⚠ all 2 seeds at chance |" in table


def test_a_run_without_a_diagnosis_is_at_chance_when_its_val_accuracy_is_the_majority_rate() -> None:
    base = run("mega", "listops", 0.17) | {"data/val_majority_rate": 0.165}
    assert at_chance(base | {"val/acc_best": 0.17}) and not at_chance(base | {"val/acc_best": 0.40})
    assert not at_chance(base | {"val/acc_best": 0.17, "diagnosis": "learning"})  # the run's own diagnosis wins
    assert not at_chance(run("mega", "listops", 0.17))  # nothing to tell by


# --- HTML ----------------------------------------------------------------------------------------------------

def test_the_html_page_is_self_contained_with_tables_and_escaped_text(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    (tmp_path / "plot.png").write_bytes(png)
    md = "# Title\n\n| model | acc |\n|---|---|\n| **mega** `x` | 1.0 |\n\n![plot](plot.png)\n\n*a <script>alert(1)</script> caption*\n"
    page = markdown_to_html(md, tmp_path)
    assert "<h1>Title</h1>" in page and "<table>" in page and "<td><strong>mega</strong> <code>x</code></td>" in page
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page and 'src="plot.png"' not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http" not in page  # nothing fetched from elsewhere


# --- the accuracy-vs-speed figure ----------------------------------------------------------------------------

def bench_of(cells: dict[tuple[str, int], float | str]) -> dict:
    rows = [{"model": m, "length": n, **({"skipped": v} if isinstance(v, str) else {"tokens_per_s": v, "memory_mb": v / 10})}
            for (m, n), v in cells.items()]
    return {"path": "bench_results/text/results.json", "rows": rows,
            "meta": {"task": "text", "device": "cpu", "precision": "fp32", "batch": 1, "peak_flops": 1e11}}


SPEED_RUNS = ([run("mega", t, a, seed=s) for t, a in (("listops", 0.6), ("text", 0.9)) for s in (1, 2)]
              + [run("transformer", t, a) for t, a in (("listops", 0.36), ("text", 0.64))]
              + [run("s4d", "listops", 0.5)])


def test_the_speed_figure_plots_one_length_of_the_benchmark_for_models_with_the_same_task_set() -> None:
    bench = bench_of({("mega", 1024): 4000.0, ("mega", 4096): 1000.0, ("transformer", 1024): 8000.0,
                      ("transformer", 4096): "predicted 900 s > budget 90 s", ("s4d", 4096): 3000.0})
    rows = table_rows(SPEED_RUNS)
    data = score_vs_speed(rows, SPEED_RUNS, bench)
    assert data.tasks == ("listops", "text") and data.length == 1024  # both models measured there, only mega at 4K
    assert data.points == [("mega (paper preset)", 4000.0, pytest.approx(75.0), 400.0),
                           ("transformer (paper preset)", 8000.0, pytest.approx(50.0), 800.0)]
    assert "over ListOps, Text" in data.caption and "at L = 1024 from `bench_results/text/results.json`" in data.caption
    assert "other task sets: s4d (paper preset)" in data.caption  # its score would average other tasks
    pinned = score_vs_speed(rows, SPEED_RUNS, bench, length=4096)
    assert [p[0] for p in pinned.points] == ["mega (paper preset)"]
    assert "not measured at this length: transformer (predicted 900 s > budget 90 s)" in pinned.caption


def test_without_a_benchmark_the_speed_figure_uses_the_runs_tokens_per_second_on_one_task() -> None:
    runs = [r | {"perf/tokens_per_sec": 1000.0 * (1 + (r["task"] == "text")), "perf/peak_memory_mb": 500.0} for r in SPEED_RUNS]
    data = score_vs_speed(table_rows(runs), runs, None)
    assert data.length is None and "training tokens/s on ListOps" in data.xlabel  # ListOps has the most runs
    assert [p[1] for p in data.points] == [1000.0, 1000.0]
    assert "no `make bench` results" in data.caption
