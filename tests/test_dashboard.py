"""The W&B dashboard: every key its panels read exists in a real offline training run or a real ``make bench``
output logged to W&B; the dry run writes the spec without a server; a save sends that spec through the library
with only its server look-ups (``wandb.Api``) replaced, and updates a report of the same title in place."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from lra_bench import train as train_mod
from lra_bench.benchmarks import bench
from lra_bench.reporting import dashboard
from lra_bench.reporting.wandb_tables import log_bench_tables
from tests.conftest import TINY_RUN, compose_config
from tests.wandb_records import iter_records, read_run

BENCH_GRID = "make bench runs"
# attributes every W&B run has, whatever the harness logs
RUN_ATTRIBUTES = {"state", "displayName", "createdAt"}


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("wandb")
    mp = pytest.MonkeyPatch()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(home), "WANDB_CONFIG_DIR": str(home / "cfg"),
                       "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_SILENT": "true"}.items():
        mp.setenv(key, value)
    mp.delenv("WANDB_API_KEY", raising=False)
    yield home
    mp.undo()


def read_finished_run(run_dir: Path, timeout: float = 60.0) -> dict[str, Any]:
    """read_run once the run's exit record is on disk: wandb-core writes the file after ``finish()`` returns."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    deadline = time.monotonic() + timeout
    while not any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.2)
    return read_run(run_dir)


def flatten(config: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for k, v in config.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= flatten(v, f"{prefix}{k}.")
    return keys


def keys_of(run: dict[str, Any]) -> dict[str, set[str]]:
    """What a W&B run read back from its file offers the panels."""
    attributes = RUN_ATTRIBUTES | {k for k, v in (("group", run["run"]["group"]), ("jobType", run["run"]["job_type"])) if v}
    return {"history": {k for row in run["history"] for k in row}, "summary": set(run["summary"]),
            "config": flatten(run["config"]), "run": attributes,
            # read_run joins nested summary keys with "/": a logged table is "<key>/_type" = "table-file"
            "tables": {k.removesuffix("/_type") for k, v in run["summary"].items() if k.endswith("/_type") and v == "table-file"}}


@pytest.fixture(scope="module")
def trained(offline_env: Path, listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny real training run, W&B offline, with the chance diagnosis on (as the default callbacks will have it)."""
    logs = tmp_path_factory.mktemp("logs")
    out = logs / "run"
    cfg = compose_config([*TINY_RUN, "logger=wandb", f"paths.data_dir={listops_root}", f"paths.output_dir={out}",
                          "logger.wandb.group=unit-tests", "++callbacks.chance._target_=lra_bench.training.diagnosis.ChanceDiagnosis",
                          "++callbacks.chance.fraction=0.5"])
    train_mod.train(cfg)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    return {"logs": logs, "run": read_finished_run(run_dir)}


@pytest.fixture(scope="module")
def benched(offline_env: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real ``make bench`` output on a tiny grid (results.json), logged to W&B offline by ``log_bench_tables``."""
    import wandb

    root = tmp_path_factory.mktemp("bench_results")
    cfg = compose_config(["preset_task=listops", "models=[transformer,s4d]", "lengths=[64,128]", "batch=1", "warmup=0",
                          "repeats=1", "inference=false", "flops=false", f"out_dir={root / 'listops'}", "budget.cell_seconds=600",
                          'model_overrides=["model.d_model=16","model.net.backbone.n_layers=1","task.max_length=128"]'],
                         config_name="bench")
    bench.run(cfg)
    saved = json.loads((root / "listops" / "results.json").read_text())["rows"]
    run = wandb.init(project="lra_bench", job_type="bench", group="bench", mode="offline", dir=str(offline_env))
    logged = log_bench_tables(run, saved)
    run_dir = Path(run.dir).parent
    run.finish()
    return {"root": root, "rows": saved, "logged": logged, "run": read_finished_run(run_dir)}


def check_keys(panels: list[dict], trained: dict, benched: dict | None) -> None:
    training = keys_of(trained["run"])
    for panel in panels:
        real = keys_of(benched["run"]) if panel["grid"] == BENCH_GRID else training
        for kind in ("history", "summary", "config", "run", "tables"):
            missing = set(panel[kind]) - real[kind]
            assert not missing, f"{panel['title']} reads {kind} keys no real run has: {sorted(missing)}"


def raw_references(node: Any) -> set[tuple[str, str]]:
    """Every metric reference in the spec found without spec_keys: panel axes and metrics, group-bys, columns,
    run-set filters, groupings and sort keys."""
    found = set()
    if isinstance(node, dict) and {"section", "name"} <= set(node):  # filter, grouping and sort keys
        found.add(("key", f"{node['section']}:{node['name']}"))
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("metrics", "xAxis", "yAxis", "zAxis", "groupBy", "columnOrder"):
                for name in v if isinstance(v, list) else [v]:
                    found.add((k, name))
            else:
                found |= raw_references(v)
    elif isinstance(node, list):
        for v in node:
            found |= raw_references(v)
    return found


def dry_run(trained: dict, benched: dict, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "dashboard.json"
    assert dashboard.main(["--dry-run", "--runs", str(trained["logs"]), "--bench", str(benched["root"]), "--out", str(out),
                           "--group", "unit-tests", *args]) == 0
    return json.loads(out.read_text())


def test_the_bench_run_holds_the_table_and_one_series_per_model(benched: dict) -> None:
    keys = keys_of(benched["run"])
    assert "bench/speed_memory" in keys["tables"]
    for model in ("transformer", "s4d"):
        assert {f"bench/tokens_per_s/{model}", f"bench/memory_mb/{model}", f"bench/speed_vs_transformer/{model}"} <= keys["history"]
    lengths = [row["bench/length"] for row in benched["run"]["history"] if "bench/tokens_per_s/s4d" in row]
    assert lengths == [64, 128]
    assert set(benched["logged"]) <= keys["history"] | keys["tables"]


def test_the_dry_run_spec_covers_the_four_views_with_keys_real_runs_have(trained: dict, benched: dict, tmp_path: Path) -> None:
    written = dry_run(trained, benched, tmp_path)
    assert written["dry_run"] and written["group"] == "unit-tests"
    panels = written["panels"]
    assert panels == dashboard.spec_keys(written["spec"])
    check_keys(panels, trained, benched)
    by_kind = {}
    for p in panels:
        by_kind.setdefault(p["kind"], []).append(p)
    # 1. the LRA table: a snapshot table of the runs found, and test accuracy mean ± std per task and model
    blocks = written["spec"]["spec"]["blocks"]
    snapshot = next(b["content"] for b in blocks if b["type"] == "markdown-block")
    assert "| **transformer** | reduced |" in snapshot and "| Mega | published |" in snapshot
    assert any(p["summary"] == ["test/acc"] for p in by_kind["Bar Chart"])
    table_set = next(p for p in by_kind["run set"] if p["title"] == "finished training runs")
    assert {"model.name", "task.name"} <= set(table_set["config"]) and "group" in table_set["run"]
    # 2. accuracy against training tokens/s and against peak memory, per task
    scatters = {tuple(p["summary"]) for p in by_kind["Scatter Plot"]}
    assert scatters == {("perf/tokens_per_sec", "test/acc"), ("perf/peak_memory_mb", "test/acc")}
    assert len(by_kind["Scatter Plot"]) == 2 * 6
    # 3. validation accuracy curves per task, coloured (grouped) by model
    curves = [p for p in by_kind["Run History Line Plot"] if p["grid"] != BENCH_GRID]
    assert len(curves) == 6 and all(p["history"] == ["trainer/global_step", "val/acc"] and p["config"] == ["model.name"]
                                    for p in curves)
    # 4. the bench's speed and memory against length, one line per benchmarked model, and its table
    lines = [p for p in by_kind["Run History Line Plot"] if p["grid"] == BENCH_GRID]
    assert ["bench/length", "bench/tokens_per_s/s4d", "bench/tokens_per_s/transformer"] in [p["history"] for p in lines]
    assert ["bench/length", "bench/memory_mb/s4d", "bench/memory_mb/transformer"] in [p["history"] for p in lines]
    assert by_kind["Weave"][0]["tables"] == ["bench/speed_memory"]


def test_spec_keys_misses_no_reference_in_the_spec(trained: dict, benched: dict, tmp_path: Path) -> None:
    written = dry_run(trained, benched, tmp_path, "--tasks", "listops,pathfinder")
    listed = {name for p in written["panels"] for kind in ("history", "summary", "config", "run", "tables") for name in p[kind]}
    for field, ref in raw_references(written["spec"]):
        if ref == "_step":
            continue
        name = ref.split(":", 1)[-1]
        name = dashboard._config_key(name.removesuffix(".value")) if ref.startswith("config") or field == "groupBy" else name
        assert name in listed, (field, ref)


class FakeServiceApi:
    """The transport wandb.Api uses for GraphQL (``Api._service_api``), answering as the W&B server would."""

    app_url = "https://wandb.example"

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def execute_graphql(self, query: str, variables: dict) -> dict:
        name = re.search(r"(?:query|mutation)\s+(\w+)", query).group(1)
        self.calls.append((name, variables))
        if name == "ProjectInternalId":
            return {"project": {"id": "UHJvamVjdDox", "internalId": "internal-1"}}
        if name == "upsertView":
            v = variables
            view = {"id": v["id"] or "VmlldzoxMjM=", "name": v["name"], "displayName": v["displayName"],
                    "description": v["description"], "spec": v["spec"],
                    "project": {"id": "UHJvamVjdDox", "name": v["projectName"], "entityName": v["entityName"]}}
            return {"upsertView": {"view": view, "inserted": v["id"] is None}}
        raise AssertionError(f"unexpected server call {name}")


class FakeReport:
    def __init__(self, id: str, display_name: str) -> None:
        self.id, self.display_name = id, display_name


def fake_api(calls: list, existing: list[FakeReport]):
    """``wandb.Api``: the one door through which wandb-workspaces (and the report and run look-ups) reach the server."""

    class FakeApi:
        default_entity = "me"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._service_api = FakeServiceApi(calls)

        def projects(self, entity: str) -> list:
            return []

        def create_project(self, project: str, entity: str) -> None:
            calls.append(("create_project", {"entity": entity, "project": project}))

        def reports(self, path: str) -> list[FakeReport]:
            calls.append(("reports", {"path": path}))
            return existing

        def runs(self, path: str, filters: dict | None = None) -> list:
            calls.append(("runs", {"path": path, "filters": filters}))
            return []

    return FakeApi


def test_saving_sends_the_spec_through_the_library_and_updates_in_place(trained: dict, benched: dict, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import wandb

    args = ["--entity", "team", "--project", "lra", "--group", "unit-tests", "--runs", str(trained["logs"]),
            "--bench", str(benched["root"])]
    calls: list = []
    monkeypatch.setattr(wandb, "Api", fake_api(calls, existing=[]))
    assert dashboard.main(args) == 0
    names = [c[0] for c in calls]
    assert names.count("ProjectInternalId") == 8  # one per run set: the LRA table, six tasks, the bench
    assert ("create_project", {"entity": "team", "project": "lra"}) in calls
    (upsert,) = [c[1] for c in calls if c[0] == "upsertView"]
    assert upsert["id"] is None and upsert["entityName"] == "team" and upsert["displayName"].endswith("(unit-tests)")
    spec = {"spec": json.loads(upsert["spec"])}
    runsets = [rs for b in spec["spec"]["blocks"] if b["type"] == "panel-grid" for rs in b["metadata"]["runSets"]]
    assert all(rs["project"] == {"id": "internal-1", "name": "lra", "entityName": "team"} for rs in runsets)
    check_keys(dashboard.spec_keys(spec), trained, benched)
    assert "created the W&B report https://wandb.example/team/lra/reports/" in capsys.readouterr().out

    calls.clear()  # a second run finds the report by its title and updates it
    monkeypatch.setattr(wandb, "Api", fake_api(calls, existing=[FakeReport("VmlldzoxMjM=", upsert["displayName"])]))
    assert dashboard.main(args) == 0
    (again,) = [c[1] for c in calls if c[0] == "upsertView"]
    assert again["id"] == "VmlldzoxMjM=" and "updated the W&B report" in capsys.readouterr().out


def test_unknown_tasks_are_refused(capsys) -> None:
    assert dashboard.main(["--dry-run", "--tasks", "listops,sudoku", "--out", os.devnull]) == 2
    assert "unknown task(s) sudoku" in capsys.readouterr().out


def test_without_bench_results_the_bench_charts_name_the_benchmarks_default_models(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from lra_bench.config import CONFIG_DIR

    assert dashboard.bench_models(tmp_path / "none") == list(OmegaConf.load(CONFIG_DIR / "bench.yaml").models)


def test_the_snapshot_and_the_live_groups_hold_one_configuration_each(trained: dict, benched: dict, tmp_path: Path) -> None:
    """The real run copied as a second seed, an lr variant and a quick short-ListOps run (their resolved configs
    edited as such runs would log them): the snapshot uses the report's grouping, and the live run sets group by
    the config keys that tell those configurations apart, keys the real run has."""
    import yaml

    (source,) = {p.parent for p in Path(trained["logs"]).rglob("result.json")}
    edits = {"seed2": {"seed": 2}, "lr": {"optimizer.lr": 5e-4}, "quick": {"task.datamodule.dirname": "listops-quick"}}
    logs = tmp_path / "logs"
    shutil.copytree(source, logs / "seed1", ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    for name, changes in edits.items():
        folder = shutil.copytree(source, logs / name, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
        config = yaml.safe_load((folder / "csv" / "hparams.yaml").read_text())
        for key, value in changes.items():
            *parents, last = key.split(".")
            node = config
            for p in parents:
                node = node[p]
            node[last] = value
        (folder / "csv" / "hparams.yaml").write_text(yaml.safe_dump(config))
        result = json.loads((folder / "result.json").read_text())
        (folder / "result.json").write_text(json.dumps(result | {"seed": changes.get("seed", result["seed"])}))
    out = tmp_path / "dashboard.json"
    assert dashboard.main(["--dry-run", "--runs", str(logs), "--bench", str(benched["root"]), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    snapshot = next(b["content"] for b in written["spec"]["spec"]["blocks"] if b["type"] == "markdown-block")
    assert "| **transformer** | reduced |" in snapshot and "(n=2) · 1 config" in snapshot  # seeds 1 and 2
    assert "| **transformer** (lr=0.0005) | reduced |" in snapshot
    assert "Runs on other data" in snapshot and "dirname=listops-quick" in snapshot.split("Runs on other data")[1]
    table_set = next(p for p in written["panels"] if p["title"] == "finished training runs")
    assert {"model.name", "task.name", "optimizer.lr", "task.datamodule.dirname"} <= set(table_set["config"])
    runsets = [rs for b in written["spec"]["spec"]["blocks"] if b["type"] == "panel-grid" for rs in b["metadata"]["runSets"]]
    grouping = {rs["name"]: [dashboard._config_key(g["name"]) for g in rs.get("grouping", [])] for rs in runsets}
    assert grouping["finished training runs"] == ["task.name", "model.name", "optimizer.lr", "task.datamodule.dirname"]
    assert grouping["ListOps runs"] == ["model.name", "optimizer.lr", "task.datamodule.dirname"]  # never by seed
    check_keys(written["panels"], trained, benched)


@pytest.fixture(scope="module")
def pretrained(offline_env: Path, listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny real self-pretrained run (``pretrain=spt``: stage 1 in ``<run>/pretrain``, W&B offline) and the same
    preset and seed from scratch (CSV only), one epoch each."""
    logs = tmp_path_factory.mktemp("spt_logs")
    common = [*TINY_RUN, "trainer.max_epochs=1", f"paths.data_dir={listops_root}"]
    train_mod.train(compose_config([*common, f"paths.output_dir={logs / 'scratch'}"]))
    out = logs / "spt"
    train_mod.train(compose_config([*common, "logger=wandb", f"paths.output_dir={out}", "logger.wandb.group=unit-tests",
                                    "pretrain=spt", "pretrain.max_steps=2"]))
    (stage_one,) = (out / "pretrain" / "wandb").glob("offline-run-*")
    (stage_two,) = (out / "wandb").glob("offline-run-*")
    return {"logs": logs, "out": out, "stage_one": read_finished_run(stage_one), "stage_two": read_finished_run(stage_two)}


@pytest.mark.slow
def test_spt_runs_are_their_own_rows_and_live_groups_and_stage_one_is_in_no_run_set(pretrained: dict, tmp_path: Path) -> None:
    """A real SPT run beside a real run from scratch of the same tiny preset and seed: two snapshot rows, live groups
    split by the recipe (a key the real SPT run's config has), and stage 1 (job type pretrain) outside every run set."""
    out = tmp_path / "dashboard.json"
    assert dashboard.main(["--dry-run", "--runs", str(pretrained["logs"]), "--bench", str(tmp_path / "none"), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    snapshot = next(b["content"] for b in written["spec"]["spec"]["blocks"] if b["type"] == "markdown-block")
    ours = [line.split(" |")[0] for line in snapshot.splitlines() if line.startswith("| **transformer**")]
    assert ours == ["| **transformer**", "| **transformer** [SPT]"] and "(n=2)" not in snapshot
    runsets = [rs for b in written["spec"]["spec"]["blocks"] if b["type"] == "panel-grid" for rs in b["metadata"]["runSets"]]
    grouping = {rs["name"]: [dashboard._config_key(g["name"]) for g in rs.get("grouping", [])] for rs in runsets}
    assert grouping["finished training runs"] == ["task.name", "model.name", "pretrain.name"]
    # every key the training panels read is in the real SPT run (stage 2)
    check_keys([p for p in written["panels"] if p["grid"] != BENCH_GRID], {"run": pretrained["stage_two"]}, None)
    stage_one, stage_two = pretrained["stage_one"]["run"], pretrained["stage_two"]["run"]
    assert (stage_one["job_type"], stage_two["job_type"]) == ("pretrain", "listops") and stage_one["group"] == stage_two["group"]
    job_types = [f["value"] if isinstance(f["value"], list) else [f["value"]]
                 for rs in runsets for f in rs["filters"]["filters"] if f["key"]["name"].lower() == "jobtype"]
    assert len(job_types) == len(runsets) and not any("pretrain" in chosen for chosen in job_types)  # stage 1: no run set


@pytest.mark.slow
def test_the_reports_hand_made_spt_results_have_the_keys_a_real_spt_run_writes(pretrained: dict) -> None:
    """tests/test_report.py's SPT result.json files stand for real ones: every key they use is in the real files,
    with a value of the same type (or null there: a run composed in-process records no experiment)."""
    from tests.test_report import SCRATCH_RESULT, SPT_RESULT, STAGE_ONE_RESULT

    logs = pretrained["logs"]
    for mine, path in ((SCRATCH_RESULT, logs / "scratch" / "result.json"), (SPT_RESULT, logs / "spt" / "result.json"),
                       (STAGE_ONE_RESULT, logs / "spt" / "pretrain" / "result.json")):
        real = json.loads(path.read_text())
        for key, value in mine.items():
            assert key in real, (path, key)
            assert real[key] is None or type(real[key]) is type(value), (path, key, real[key], value)
