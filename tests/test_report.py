"""The report: published rows as printed, our averages, the tables built from result.json files with their seed
and chance flags, the HTML page, and the accuracy-vs-speed figure's data and caption."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from lra_bench.reporting.configurations import settings, task_variant, varying_keys
from lra_bench.reporting.dashboard import main as dashboard_main
from lra_bench.reporting.html import markdown_to_html
from lra_bench.reporting.plots import figures, score_vs_speed
from lra_bench.reporting.published import FAIL, PUBLISHED, five_task_avg, rows_for
from lra_bench.reporting.report import fmt_cell, lra_table, table_rows
from lra_bench.reporting.report import main as report_main
from lra_bench.reporting.runs import at_chance, local_runs, merge, scale_of, select
from lra_bench.reporting.tables import budget_of, configurations_list, row_name, variant_rows, variant_table


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
    assert row["flags"]["listops"] == ["seeds disagree: spread 11.00 > 5 points"]
    assert fmt_cell(row["listops"], row["flags"]["listops"]) == "55.33 ± 5.51 (n=3) · 1 config ⚠ seeds disagree: spread 11.00 > 5 points"
    (relaxed,) = table_rows(runs, spread=12.0)
    assert relaxed["flags"]["listops"] == []


def test_cells_flag_some_seeds_at_chance_and_mark_cells_all_at_chance() -> None:
    runs = [run("mega", "pathfinder", 0.50, seed=1) | {"diagnosis": "at_chance"},
            run("mega", "pathfinder", 0.51, seed=2) | {"diagnosis": "learning"},
            run("mega", "pathfinder", 0.93, seed=3) | {"diagnosis": "learning"},
            run("s4", "pathfinder", 0.50, seed=1) | {"diagnosis": "at_chance"},
            run("s4", "pathx", 0.50, seed=1) | {"diagnosis": "at_chance"}, run("s4", "pathx", 0.50, seed=2) | {"diagnosis": "at_chance"}]
    rows = {r["model"]: r for r in table_rows(runs)}
    assert rows["mega"]["flags"]["pathfinder"] == ["1 of 3 seeds at chance", "seeds disagree: spread 43.00 > 5 points"]
    assert rows["s4"]["flags"] == {"pathfinder": ["at chance"], "pathx": ["all 2 seeds at chance"]}
    table = lra_table(list(rows.values()))
    assert "| 50.00 (n=1) · 1 config ⚠ at chance | 50.00 ± 0.00 (n=2) · 1 config ⚠ all 2 seeds at chance |" in table


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
    data = score_vs_speed(rows, bench)
    assert data.tasks == ("listops", "text") and data.length == 1024  # both models measured there, only mega at 4K
    assert data.points == [("mega, paper preset", 4000.0, pytest.approx(75.0), 400.0),
                           ("transformer, paper preset", 8000.0, pytest.approx(50.0), 800.0)]
    assert data.title == "make bench: cpu, fp32, batch 1, preset text"  # the figure says where its speed comes from
    assert "over ListOps, Text" in data.caption and "at L = 1024 from `bench_results/text/results.json`" in data.caption
    assert "other task sets: s4d, paper preset" in data.caption  # its score would average other tasks
    pinned = score_vs_speed(rows, bench, length=4096)
    assert [p[0] for p in pinned.points] == ["mega, paper preset"]
    assert "not measured at this length: transformer, paper preset (predicted 900 s > budget 90 s)" in pinned.caption


def test_without_a_benchmark_the_speed_figure_uses_the_runs_tokens_per_second_on_one_task() -> None:
    runs = [r | {"perf/tokens_per_sec": 1000.0 * (1 + (r["task"] == "text")), "perf/peak_memory_mb": 500.0} for r in SPEED_RUNS]
    data = score_vs_speed(table_rows(runs), None)
    assert data.length is None and "training tokens/s on ListOps" in data.xlabel  # ListOps has the most runs
    assert [p[1] for p in data.points] == [1000.0, 1000.0]
    assert "no `make bench` results" in data.caption


# --- one configuration per cell --------------------------------------------------------------------------------

def configured(seed: int, acc: float, model: str = "mega", **settings) -> dict:
    """A run as ``local_runs`` reads it: its result and its resolved config (flattened), as a run folder keeps it."""
    config = {"task.name": "listops", "model.name": model, "task.datamodule.dirname": "listops-1000", "task.max_length": 2000,
              "optimizer.lr": 1e-3, "seed": seed, "task.datamodule.seed": seed, "paths.output_dir": f"/logs/run{seed}",
              "sweep_name": f"adhoc-{seed}", "logger.wandb.name": f"mega-listops:seed={seed}", "trainer.accelerator": "cpu"}
    config |= {k.replace("__", "."): v for k, v in settings.items()}
    return run(model, "listops", acc, seed=seed) | {"config": config}


MIXED = [configured(1, 0.60), configured(2, 0.62), configured(1, 0.40, optimizer__lr=5e-4),
         configured(1, 0.90, task__datamodule__dirname="listops-quick", task__max_length=120)]


def test_a_cell_holds_the_seeds_of_one_configuration_and_other_settings_are_named_rows() -> None:
    rows = table_rows(MIXED)
    assert [(row_name(r, bold=False), r["listops"].n, r["configs"]["listops"]) for r in rows] == [
        ("mega", 2, 1), ("mega (lr=0.0005)", 1, 1)]  # before: one cell of n=4 pooling all of them
    assert rows[0]["listops"].mean == pytest.approx(61.0) and rows[1]["listops"].mean == pytest.approx(40.0)
    assert rows[1]["differences"]["listops"] == [("optimizer.lr", 5e-4, 1e-3)]
    table = lra_table(rows)
    assert "| **mega** | paper preset | 61.00 ± 1.41 (n=2) · 1 config |" in table
    assert "| **mega** (lr=0.0005) | paper preset | 40.00 (n=1) · 1 config |" in table


def test_the_quick_short_listops_is_another_task_never_in_the_lra_column() -> None:
    assert all(90.0 not in (r["listops"].mean,) for r in table_rows(MIXED))
    (other,) = variant_rows(MIXED)
    assert (other["model"], other["task"], other["variant"], other["cell"].n) == ("mega", "listops", "dirname=listops-quick", 1)
    assert "| **mega** | ListOps | dirname=listops-quick | paper preset | 90.00 (n=1) · 1 config |" in variant_table([other])


def test_a_data_variant_is_told_by_the_data_keys_of_conf_task() -> None:
    def variant(task: str, **datamodule) -> str | None:
        return task_variant({"task": task, "config": {f"task.datamodule.{k}": v for k, v in datamodule.items()}})

    assert variant("listops", dirname="listops-1000") is None and variant("listops", dirname="listops-quick") == "dirname=listops-quick"
    assert variant("pathfinder", resolution=32, difficulty="curv_contour_length_14") is None
    assert variant("pathfinder", resolution=32, difficulty="curv_baseline") == "difficulty=curv_baseline"
    assert variant("pathx", resolution=128, difficulty="curv_contour_length_14") is None  # pathx.yaml's defaults merged
    assert variant("pathx", resolution=32, difficulty="curv_contour_length_14") == "resolution=32"
    assert task_variant({"task": "listops", "config": None, "experiment": "quick"}) == "experiment=quick"  # no config kept
    assert task_variant({"task": "listops", "config": None, "experiment": "lra/mega-listops"}) is None


def test_runs_made_with_lras_released_code_are_their_own_marked_row() -> None:
    runs = [configured(1, 0.60), configured(2, 0.62), configured(1, 0.37) | {"lra_code": True}]
    rows = table_rows(runs)
    assert [(row_name(r), r["listops"].n) for r in rows] == [("**mega**", 2), ("**mega** [LRA code]", 1)]
    # the switch in the resolved config alone (a W&B run) is enough too
    rows = table_rows([configured(1, 0.60), configured(2, 0.37, lra_code=True)])
    assert [row_name(r) for r in rows] == ["**mega**", "**mega** [LRA code]"]


def test_a_spread_of_exactly_the_threshold_is_not_flagged() -> None:
    cell = lambda *accs: table_rows([run("mega", "listops", a, seed=s) for s, a in enumerate(accs)])[0]["flags"]["listops"]
    assert cell(0.50, 0.55) == []  # 5.00 points: "spread 5.0 > 5" before
    assert cell(0.50, 0.5501) == ["seeds disagree: spread 5.01 > 5 points"]


def test_two_runs_of_one_configuration_with_the_same_seed_are_flagged() -> None:
    (row,) = table_rows([configured(1, 0.60), configured(1, 0.61) | {"source": "wandb:me/lra/abc"}])
    assert row["flags"]["listops"] == ["1 run(s) repeat a seed"]


def test_a_wandb_run_that_is_also_a_local_folder_is_counted_once() -> None:
    local = [configured(1, 0.6) | {"wandb_id": "abc"}]
    remote = [configured(1, 0.6) | {"wandb_id": "abc"}, configured(2, 0.62) | {"wandb_id": "def"}]
    assert [r["wandb_id"] for r in merge(local, remote)] == ["abc", "def"]


def test_the_accuracy_figures_draw_lra_rows_only_and_say_variant_and_scale(tmp_path: Path) -> None:
    rows = table_rows(MIXED)
    by_task, vs_speed = figures(rows, None, tmp_path)
    assert "mega, paper preset" in by_task.drawn and "mega (lr=0.0005), paper preset" in by_task.drawn
    assert len([d for d in by_task.drawn if "published" not in d]) == 2  # the quick run is not drawn beside 63.14
    assert "each on its own data (no quick variants)" in by_task.title and "paper preset" in by_task.title
    assert "LRA tasks on their own data; paper preset" in vs_speed.title and "no make bench results" in vs_speed.title


# --- where the settings come from ------------------------------------------------------------------------------

def test_a_run_folder_gives_its_resolved_config_from_hparams_yaml_else_hydras_config(tmp_path: Path) -> None:
    both, hydra_only, bare = tmp_path / "both", tmp_path / "hydra", tmp_path / "bare"
    for folder in (both, hydra_only, bare):
        folder.mkdir()
        (folder / "result.json").write_text(json.dumps(run("mega", "listops", 0.5)))
    (both / "csv").mkdir()
    (both / "csv" / "hparams.yaml").write_text("optimizer:\n  lr: 0.0005\ntask:\n  datamodule:\n    seed: 3\n")
    for folder in (both, hydra_only):
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(
            "seed: 3\noptimizer:\n  lr: 0.002\nscheduler:\n  peak: ${optimizer.lr}\n"
            "paths:\n  output_dir: ${hydra:runtime.output_dir}\n")
    found = {Path(r["source"]).name: r for r in local_runs(tmp_path)}
    assert found["both"]["config"] == {"optimizer.lr": 0.0005, "task.datamodule.seed": 3}  # what the run logged wins
    assert found["both"]["config_file"].endswith("csv/hparams.yaml")
    hydra = found["hydra"]["config"]
    assert hydra["scheduler.peak"] == 0.002  # interpolations resolved
    assert hydra["paths.output_dir"] == "${hydra:runtime.output_dir}"  # one only the Hydra run could resolve: as written
    assert found["bare"]["config"] is None
    assert settings(found["hydra"]) == {"experiment": "lra/mega-listops", "optimizer.lr": 0.002, "scheduler.peak": 0.002}


# --- malformed result files and filters ------------------------------------------------------------------------

BAD_RESULTS = {"null": "null", "model-null": json.dumps({"model": None, "task": "listops", "test/acc": 0.5}),
               "truncated": '{"model": "mega", "task": "listops", "test/a',
               "percent": json.dumps(run("mega", "listops", 87.5)), "text-acc": json.dumps(run("mega", "listops", 0.5) | {"test/acc": "0.5"})}
BAD_REASONS = {"null": "not a JSON object but null", "model-null": "'model' is None, not a name", "truncated": "not valid JSON",
               "percent": "'test/acc' is 87.5, outside [0, 1]", "text-acc": "'test/acc' is '0.5', not a number",
               "folder": "not a file"}


def bad_runs(root: Path) -> Path:
    for name, text in BAD_RESULTS.items():
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(text)
    (root / "folder" / "result.json").mkdir(parents=True)  # a folder named result.json
    (root / "good").mkdir()
    (root / "good" / "result.json").write_text(json.dumps(run("mega", "listops", 0.5)))
    return root


@pytest.mark.parametrize("command", ["report", "dashboard"])
def test_malformed_result_files_are_skipped_each_with_one_warning_naming_it(command: str, tmp_path: Path, caplog, capsys) -> None:
    runs = bad_runs(tmp_path / "logs")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        if command == "report":
            assert report_main(["--runs", str(runs), "--bench", str(tmp_path / "none"), "--out", str(out)]) == 0
            table = (out / "report.md").read_text()
        else:
            assert dashboard_main(["--dry-run", "--runs", str(runs), "--bench", str(tmp_path / "none"), "--out", str(out / "d.json")]) == 0
            blocks = json.loads((out / "d.json").read_text())["spec"]["spec"]["blocks"]
            table = next(b["content"] for b in blocks if b["type"] == "markdown-block")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(BAD_REASONS) and all("\n" not in w for w in warnings)
    for name, why in BAD_REASONS.items():
        (line,) = [w for w in warnings if f"{runs / name / 'result.json'}:" in w]
        assert line.startswith("skipping ") and why in line, line
    assert "| **mega** | paper preset | 50.00 (n=1) · 1 config |" in table and "87.5" not in table and "Traceback" not in capsys.readouterr().err


def test_filters_keep_one_sweep_one_experiment_or_the_folders_of_a_glob(tmp_path: Path, capsys) -> None:
    jobs = {"multiruns/lr-a/seed=1": ("lr-a", "lra/mega-listops", 0.6), "multiruns/lr-a/seed=2": ("lr-a", "lra/mega-listops", 0.62),
            "multiruns/lr-b/seed=1": ("lr-b", "lra/mega-listops", 0.3), "runs/s4-listops/x": (None, "lra/s4-listops", 0.5)}
    for folder, (sweep, experiment, acc) in jobs.items():
        (tmp_path / folder).mkdir(parents=True)
        model = experiment.split("/")[1].split("-")[0]
        (tmp_path / folder / "result.json").write_text(json.dumps(run(model, "listops", acc) | {"sweep": sweep, "experiment": experiment}))
    runs = local_runs(tmp_path)
    assert len(select(runs, tmp_path, sweep="lr-a")) == 2 and len(select(runs, tmp_path, sweep="lr-*")) == 3
    assert [r["model"] for r in select(runs, tmp_path, experiment="lra/s4-*")] == ["s4"]
    assert len(select(runs, tmp_path, glob="multiruns/*/seed=1")) == 2
    assert len(select(runs, tmp_path, sweep="lr-*", glob="multiruns/lr-b/*")) == 1
    out = tmp_path / "out"
    assert report_main(["--runs", str(tmp_path), "--bench", str(tmp_path / "none"), "--out", str(out), "--sweep", "lr-a"]) == 0
    assert (out / "report.md").read_text().startswith("# lra_bench report\n\n2 runs.")
    assert report_main(["--runs", str(tmp_path), "--out", str(out), "--experiment", "lra/luna-*"]) == 2
    assert "none of the 4 runs found under" in capsys.readouterr().out


def test_the_bench_time_and_memory_figures_say_device_precision_batch_and_preset() -> None:
    from lra_bench.benchmarks.bench import plot_title

    meta = {"device": "cuda", "precision": "bf16-mixed", "batch": 8, "task": "text", "repeats": 5}
    assert plot_title(meta) == "cuda, bf16-mixed, batch 8, preset text (median of 5 steps)"


def test_a_config_file_that_cannot_be_read_is_passed_over_by_name(tmp_path: Path, caplog) -> None:
    (tmp_path / "run" / "csv").mkdir(parents=True)
    (tmp_path / "run" / "result.json").write_text(json.dumps(run("mega", "listops", 0.5)))
    (tmp_path / "run" / "csv" / "hparams.yaml").write_text("optimizer: {lr: [0.001\n")  # truncated
    with caplog.at_level(logging.WARNING):
        (found,) = local_runs(tmp_path)
    assert found["config"] is None
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"cannot read the config {tmp_path / 'run' / 'csv' / 'hparams.yaml'} (" in line and "\n" not in line


def test_paper_preset_runs_may_change_devices_loggers_and_seeds_but_nothing_trained() -> None:
    preset = lambda *overrides: scale_of(run("mega", "listops", 0.6) | {"overrides": ["experiment=lra/mega-listops", *overrides]})
    assert preset("seed=3", "trainer=gpu", "trainer.precision=bf16-mixed", "logger=csv", "hydra/launcher=lra_slurm",
                  "~callbacks.progress_bar", "paths.data_dir=/data", "+sweep=seeds", "task.datamodule.num_workers=8") == "paper preset"
    for changed in ("optimizer.lr=5e-4", "trainer.max_time=00:00:09:00", "ckpt_path=/other/run/last.ckpt", "task.max_length=64"):
        assert preset(changed) == "reduced", changed


def test_the_efficiency_table_says_device_precision_batch_and_preset() -> None:
    from lra_bench.reporting.tables import efficiency_table

    bench = bench_of({("mega", 4096): 1000.0})
    assert efficiency_table(bench).startswith("From `bench_results/text/results.json` (cpu, fp32, batch 1, preset `text`), L = 4096:")


# --- the SPT protocol (pretrain=spt): its own rows, its stage 1 never a run ------------------------------------------

# result.json files as lra_bench.train writes them, keys and value types copied from a real tiny run (TINY_RUN with
# `pretrain=spt pretrain.max_steps=2`, and without): stage 2 (the run), stage 1 (`<run>/pretrain/`), a run from
# scratch, and one from before the `protocol` key; `experiment`/`overrides` as a Hydra launch records them
PRESET = {"experiment": "lra/transformer-listops", "sweep": None}
SCRATCH_RESULT = {"task": "listops", "model": "transformer", "run_name": "transformer-listops", "seed": 1, "lra_code": False,
                  "protocol": "scratch", **PRESET, "overrides": ["experiment=lra/transformer-listops", "seed=1"],
                  "val/acc_best": 0.30, "test/acc": 0.35, "test/loss": 2.1, "best_checkpoint": "ckpt", "tested_weights": "best_checkpoint",
                  "global_step": 12, "train/tokens_seen": 1616, "stop_reason": "max_epochs", "wall_time_s": 4.4}
SPT_RESULT = SCRATCH_RESULT | {
    "protocol": "spt", "overrides": ["experiment=lra/transformer-listops", "seed=1", "pretrain=spt"], "test/acc": 0.45,
    "pretrain": "spt", "pretrain/objective": "masked", "pretrain/mask_rate": 0.1, "pretrain/loss": 3.63, "pretrain/steps": 2,
    "pretrain/tokens_seen": 1092, "pretrain/wall_time_s": 4.4, "budget/total_steps": 14, "budget/total_tokens": 2708,
    "budget/total_wall_time_s": 8.8}
STAGE_ONE_RESULT = {"task": "listops", "model": "transformer", "run_name": "transformer-listops", "seed": 1, "stage": "pretrain",
                    "protocol": "spt", "pretrain": "spt", "objective": "masked", "mask_rate": 0.1, **PRESET,
                    "overrides": SPT_RESULT["overrides"], "pretrain/loss": 3.63, "global_step": 2, "train/tokens_seen": 1092,
                    "stop_reason": "max_steps", "wall_time_s": 4.4}
OLD_RESULT = {k: v for k, v in SCRATCH_RESULT.items() if k not in ("protocol", "train/tokens_seen")} | {"seed": 2, "test/acc": 0.37,
              "overrides": ["experiment=lra/transformer-listops", "seed=2"]}
RECIPE = {"name": "spt", "objective": "auto", "mask_rate": 0.1, "max_epochs": 100, "max_steps": None, "batch_size": 32,
          "optimizer": {"lr": 0.001, "weight_decay": 0.0}, "by_task": {"listops": {"mask_rate": 0.1, "lr": 0.001}}}


def run_folder(folder: Path, result: dict, pretrain: Any = "absent", seed: int = 1) -> Path:
    """A run folder: its result.json and its logged config (``csv/hparams.yaml``), ``pretrain`` as the run logged it
    (``None`` from scratch since the group exists, absent before it, the recipe for an SPT run)."""
    import yaml

    config = {"task": {"name": "listops", "datamodule": {"dirname": "listops-1000"}}, "model": {"name": "transformer"},
              "optimizer": {"lr": 0.0005}, "seed": seed, "paths": {"output_dir": str(folder)}}
    if pretrain != "absent":
        config["pretrain"] = pretrain
    (folder / "csv").mkdir(parents=True)
    (folder / "csv" / "hparams.yaml").write_text(yaml.safe_dump(config))
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_spt_and_scratch_runs_of_one_preset_and_seed_are_two_rows_and_stage_one_is_not_a_run(tmp_path: Path, caplog) -> None:
    logs = tmp_path / "logs"
    run_folder(logs / "scratch", SCRATCH_RESULT, pretrain=None)
    run_folder(logs / "old", OLD_RESULT, seed=2)  # no `pretrain` in its config, no `protocol`: from scratch
    spt = run_folder(logs / "spt", SPT_RESULT, pretrain=RECIPE)
    run_folder(spt / "pretrain", STAGE_ONE_RESULT, pretrain=RECIPE)
    with caplog.at_level(logging.INFO):
        runs = local_runs(logs)
    assert sorted(Path(r["source"]).name for r in runs) == ["old", "scratch", "spt"]  # stage 1 is no run
    assert next(r for r in runs if r["source"] == str(spt))["stage_one"] == str(spt / "pretrain")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nor a skipped file
    rows = table_rows(runs)
    assert [(row_name(r, bold=False), r["scale"], r["listops"].n, r["listops"].mean) for r in rows] == [
        ("transformer", "paper preset", 2, pytest.approx(36.0)),  # old and new files from scratch: one configuration
        ("transformer [SPT]", "paper preset", 1, pytest.approx(45.0))]  # never a cell of n=2 with seed 1 from scratch
    out = tmp_path / "out"
    assert report_main(["--runs", str(logs), "--bench", str(tmp_path / "none"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# lra_bench report\n\n3 runs (1 self-pretrained first: [SPT] rows; their 1 stage-1 result(s)")
    assert "| **transformer** [SPT] | paper preset | 45.00 (n=1) · 1 config |" in md
    runs_md = md.split("## Runs")[1]
    line = next(x for x in runs_md.splitlines() if "| SPT (spt, masked) |" in x)
    assert "| transformer [SPT] | SPT (spt, masked) | 30.00 | 45.00 | 2 + 12 = 14 steps · 1,092 + 1,616 = 2,708 tokens |" in line
    assert "| transformer | scratch | 30.00 | 35.00 | 12 steps · 1,616 tokens |" in runs_md
    assert runs_md.count("| transformer | listops |") == 3 and "/pretrain`" not in runs_md  # no row for stage 1


def test_without_a_stored_config_the_protocol_alone_keeps_spt_apart() -> None:
    """result.json files with no config beside them (overrides empty: a run composed in-process): the protocol key
    is all that tells them apart, and is enough."""
    bare = {k: v for k, v in SCRATCH_RESULT.items() if k not in ("experiment", "overrides")}
    rows = table_rows([bare, bare | {"protocol": "spt", "pretrain": "spt", "test/acc": 0.45}])
    assert [(row_name(r, bold=False), r["listops"].n) for r in rows] == [("transformer", 1), ("transformer [SPT]", 1)]
    assert all(r["flags"]["listops"] == [] for r in rows)  # not one cell whose two runs "repeat a seed"


def test_a_stage_one_result_of_an_unfinished_run_is_neither_a_run_nor_a_skipped_file(tmp_path: Path, caplog) -> None:
    run_folder(tmp_path / "killed" / "pretrain", STAGE_ONE_RESULT, pretrain=RECIPE)  # stage 2 never finished
    with caplog.at_level(logging.INFO):
        assert local_runs(tmp_path) == []
    (line,) = [r.getMessage() for r in caplog.records if "stage 1" in r.getMessage()]
    assert line.startswith("not a run: ") and str(tmp_path / "killed" / "pretrain") in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_pretrain_picks_the_protocol_of_a_preset_and_its_sub_overrides_name_a_variant() -> None:
    preset = ["experiment=lra/transformer-listops"]
    scale = lambda *o: scale_of(run("transformer", "listops", 0.5) | {"overrides": [*preset, *o]})  # noqa: E731
    assert scale("pretrain=spt") == scale("+pretrain=spt_s4") == scale("pretrain=null") == "paper preset"
    assert scale("pretrain=spt", "pretrain.mask_rate=0.3") == "reduced"

    def spt(acc: float, seed: int = 1, recipe: str = "spt", *extra: str, **config) -> dict:
        settings = {f"pretrain.{k}": v for k, v in ({"name": recipe, "mask_rate": 0.1} | config).items()}
        return configured(seed, acc, model="transformer", **{k.replace(".", "__"): v for k, v in settings.items()}) | {
            "protocol": "spt", "pretrain": recipe, "overrides": [*preset, f"pretrain={recipe}", *extra]}

    runs = [configured(1, 0.36, model="transformer") | {"overrides": preset},
            spt(0.44), spt(0.46, 2), spt(0.40, 1, "spt", "pretrain.mask_rate=0.3", mask_rate=0.3), spt(0.50, 1, "spt_s4")]
    rows = table_rows(runs)
    assert [(row_name(r, bold=False), r["scale"], r["listops"].n) for r in rows] == [
        ("transformer", "paper preset", 1), ("transformer [SPT]", "paper preset", 2),
        ("transformer (pretrain.mask_rate=0.3) [SPT]", "reduced", 1), ("transformer [SPT: spt_s4]", "paper preset", 1)]
    assert rows[2]["differences"]["listops"] == [("pretrain.mask_rate", 0.3, 0.1)]  # against the SPT preset
    assert configurations_list(rows).count("`pretrain.mask_rate` = 0.3 (reference 0.1)") == 1


def test_the_published_spt_row_stands_beside_ours_with_its_source() -> None:
    (row,) = [p for p in PUBLISHED if p.protocol == "spt"]
    assert (row.name, row.model, row.scores, row.avg) == (
        "Transformers + Causal SPT", "transformer", (59.15, 88.81, 90.38, 76.0, 88.49, 88.05), 81.81)
    assert "Never Train from Scratch" in row.source and "2310.02980" in row.source and "Table 1" in row.source
    assert "quoted in Parnichkun et al. 2024" in row.note and "2405.06147v2" in row.note  # read second-hand, and said
    assert {p.protocol for p in PUBLISHED} == {"scratch", "spt"}
    table = lra_table(table_rows([run("s4", "listops", 0.5)]))
    line = next(x for x in table.splitlines() if x.startswith("| Transformers + Causal SPT | published |"))
    assert "| 59.15 | 88.81 | 90.38 | 76.00 | 88.49 | 88.05 | 81.81 | – |" in line and "arXiv 2310.02980" in line


def test_the_figures_label_spt_rows_and_say_both_protocols(tmp_path: Path) -> None:
    runs = [run("transformer", "listops", 0.36), run("transformer", "listops", 0.45) | {"protocol": "spt", "pretrain": "spt"}]
    by_task, vs_speed = figures(table_rows(runs), None, tmp_path)
    assert [d for d in by_task.drawn if "published" not in d] == ["transformer, paper preset", "transformer [SPT], paper preset"]
    assert "from scratch and self-pretrained [SPT]" in by_task.title and "[SPT] and hatched" in by_task.caption
    assert "from scratch and self-pretrained [SPT]" in vs_speed.title


def test_the_dashboard_groups_live_panels_by_the_recipe_only_when_both_protocols_ran() -> None:
    scratch = configured(1, 0.36) | {"config": configured(1, 0.36)["config"] | {"pretrain": None}}
    spt = lambda acc, **c: configured(1, acc, pretrain__name="spt", pretrain__mask_rate=c.get("rate", 0.1),  # noqa: E731
                                      pretrain__by_task__listops__lr=1e-3) | {"protocol": "spt", "pretrain": "spt"}
    assert varying_keys([scratch, configured(2, 0.37)]) == []  # `pretrain: null` and no key: the same
    assert varying_keys([scratch, spt(0.45)]) == ["pretrain.name"]  # not every key of the recipe
    assert varying_keys([scratch, spt(0.45), spt(0.40, rate=0.3)]) == ["pretrain.mask_rate", "pretrain.name"]


def test_wandb_stage_one_runs_are_not_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``wandb_runs`` against a stand-in for the W&B server's run list: stage 1 (job type pretrain) and stage 2 of
    one SPT run, as the harness logs them (stage 1: no test accuracy in its summary)."""
    import wandb

    from lra_bench.reporting.runs import wandb_runs

    class Run:
        def __init__(self, id: str, job_type: str, summary: dict) -> None:
            self.id, self.job_type, self.group, self.path, self.summary = id, job_type, "g", ["me", "lra", id], summary
            self.config = {"model": {"name": "transformer"}, "task": {"name": "listops"}, "seed": 1, "pretrain": RECIPE}

    stage_one = Run("a", "pretrain", {k: v for k, v in STAGE_ONE_RESULT.items() if isinstance(v, (int, float))})
    stage_two = Run("b", "listops", {k: v for k, v in SPT_RESULT.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    stage_one.summary["test/acc"] = 0.1  # even a stage-1 run with an accuracy would not be a run

    class Api:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def runs(self, path: str, filters: dict | None = None) -> list:
            return [stage_one, stage_two]

    monkeypatch.setattr(wandb, "Api", Api)
    (found,) = wandb_runs("me/lra", None)
    assert found["wandb_id"] == "b" and table_rows([found])[0]["spt"] == "spt"
    assert budget_of(found) == "2 + 12 = 14 steps · 1,092 + 1,616 = 2,708 tokens"
