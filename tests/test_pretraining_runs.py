"""``pretrain=spt`` runs end to end: both stages of real runs (lra_bench/pretraining, lra_bench/train.py).

- One tiny two-stage run (W&B offline and CSV) read back: one W&B run per stage in one group, one data cache built
  once for both stages, the chance diagnosis in stage 2 only, the budget's step and token counts against the
  sampler's order counted by hand; a rerun of the finished run skips both stages, ``rerun=true`` sets stage 1 aside
  too and pretrains again (each on a copy of the run folder).
- Exact resume: runs killed (SIGKILL) in stage 1 (mid-epoch; after ``encoder.pt``, before stage 1's ``result.json``)
  and in stage 2 (mid-epoch), rerun with the same command, end as the uninterrupted run: both ``result.json`` files,
  the pretrained encoder's tensors, stage 2's final weights and both CSV logs.
- Every built-in model and a user's own (examples/lra_example) self-pretrains a few steps and fine-tunes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lra_bench import train as train_mod
from lra_bench.config import available
from lra_bench.data.base import ResumableRandomSampler
from lra_bench.pretraining import stages
from lra_bench.training.diagnosis import ChanceDiagnosis
from tests.conftest import TINY_RUN, compose_config
from tests.test_resume import forked, rows, run_folder
from tests.wandb_records import read_run

pytestmark = pytest.mark.slow  # every test here trains both stages for real (the W&B run alone takes ~12 s)

# stage 1: 3 steps of 16 rows; stage 2: one epoch of the 96 training rows at 16 (6 steps), validated at its end
TINY_SPT = [*TINY_RUN, "pretrain=spt", "pretrain.max_steps=3", "pretrain.batch_size=16",
            "pretrain.scheduler.warmup_steps=1", "trainer.max_epochs=1"]


class Records(logging.Handler):
    """The log messages of a run (module fixtures have no caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def train_logged(cfg: DictConfig) -> tuple[dict, list[str]]:
    """``train(cfg)`` and the INFO messages it logged."""
    records, root = Records(), logging.getLogger()
    level = root.level
    root.addHandler(records)
    root.setLevel(logging.INFO)
    try:
        return train_mod.train(cfg), records.messages
    finally:
        root.removeHandler(records)
        root.setLevel(level)


@pytest.fixture(scope="module")
def spt_run(listops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny two-stage run with the W&B (offline) and CSV loggers and a cache folder of its own."""
    out = tmp_path_factory.mktemp("spt")
    mp = pytest.MonkeyPatch()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(out / "wandb_home"), "WANDB_CONFIG_DIR": str(out / "cfg"),
                       "WANDB_CACHE_DIR": str(out / "cache_wandb")}.items():
        mp.setenv(key, value)
    mp.delenv("WANDB_API_KEY", raising=False)
    try:
        cfg = compose_config([*TINY_SPT, "logger=wandb", f"paths.data_dir={listops_root}", f"paths.cache_dir={out / 'cache'}",
                              f"paths.output_dir={out / 'run'}"])
        result, messages = train_logged(cfg)
    finally:
        mp.undo()
    return {"cfg": cfg, "result": result, "messages": messages, "run": out / "run", "cache": out / "cache"}


def stage_one(run: Path) -> dict:
    return json.loads((run / stages.STAGE_DIR / "result.json").read_text())


def test_both_stages_finish_and_stage_two_records_stage_one_and_the_budget(spt_run: dict) -> None:
    run, result = spt_run["run"], spt_run["result"]
    first = stage_one(run)
    assert first["stage"] == "pretrain" and first["global_step"] == 3 and first["objective"] == "masked"
    assert first["mask_rate"] == pytest.approx(0.10)  # ListOps' rate (the paper, section 2)
    assert json.loads((run / "result.json").read_text()) == json.loads(json.dumps(result, default=str))
    assert result["protocol"] == "spt" and result["global_step"] == 6
    assert result["pretrain/steps"] == 3 and result["pretrain/objective"] == "masked"
    assert result["pretrain/loss"] == first["pretrain/loss"] and math.isfinite(first["pretrain/loss"])
    assert result["budget/total_steps"] == 3 + 6
    assert result["budget/total_tokens"] == first["train/tokens_seen"] + result["train/tokens_seen"]
    assert "stage 2 starts from the pretrained encoder" in "\n".join(spt_run["messages"])


def test_tokens_seen_are_the_non_pad_tokens_of_the_rows_each_stage_stepped_on(spt_run: dict) -> None:
    """Counted by hand from the training split: stage 1 took the first 3 batches of 16 of its sampler's order,
    stage 2 one whole epoch."""
    data = instantiate(spt_run["cfg"].task.datamodule)
    data.setup()
    train = data.datasets["train"]
    lengths = [len(train.inputs(i)[0]) for i in range(len(train))]
    order = ResumableRandomSampler(len(train), data.seed, 16).order(0)
    assert stage_one(spt_run["run"])["train/tokens_seen"] == sum(lengths[i] for i in order[:48])
    assert spt_run["result"]["train/tokens_seen"] == sum(lengths)


def test_each_stage_is_a_wandb_run_of_its_own_in_one_group(spt_run: dict) -> None:
    run, result, cfg = spt_run["run"], spt_run["result"], spt_run["cfg"]
    (first_dir,) = (run / stages.STAGE_DIR / "wandb").glob("offline-run-*")
    (second_dir,) = (run / "wandb").glob("offline-run-*")
    first, second = read_run(first_dir), read_run(second_dir)
    group = f"{cfg.run_name}-spt-seed{cfg.seed}"
    assert first["run"]["group"] == second["run"]["group"] == group
    assert first["run"]["id"] != second["run"]["id"]
    assert first["run"]["job_type"] == "pretrain" and second["run"]["job_type"] == "listops"
    assert first["run"]["tags"] == ["transformer", "listops", "spt", "pretrain"]
    assert second["run"]["tags"] == ["transformer", "listops", "spt"]
    assert first["run"]["name"] == f"{second['run']['name']}:pretrain"
    losses = [h["train/loss"] for h in first["history"] if "train/loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert not any("val/acc" in h for h in first["history"])  # stage 1 reads no held-out row
    summary = second["summary"]
    assert summary["test/acc"] == pytest.approx(result["test/acc"])
    assert summary["val/acc_best"] == pytest.approx(result["val/acc_best"])
    for key in ("pretrain/loss", "pretrain/steps", "pretrain/tokens_seen", "budget/total_steps", "budget/total_tokens",
                "budget/total_wall_time_s"):
        assert summary[key] == pytest.approx(result[key]), key
    assert first["summary"]["pretrain/loss"] == pytest.approx(result["pretrain/loss"])


def test_both_stages_read_one_data_cache_built_once(spt_run: dict) -> None:
    builds = [m for m in spt_run["messages"] if m.startswith(("building the listops cache", "building a new listops cache"))]
    assert len(builds) == 1, builds
    assert [p.name.split("-")[0] for p in spt_run["cache"].iterdir() if p.is_dir()] == ["listops"]


def test_the_chance_diagnosis_runs_in_stage_two_only(spt_run: dict) -> None:
    first_callbacks = stages.stage_one_config(spt_run["cfg"]).callbacks.values()
    assert not [c for c in first_callbacks if c._target_.endswith(ChanceDiagnosis.__name__)]
    assert any(c._target_.endswith(ChanceDiagnosis.__name__) for c in spt_run["cfg"].callbacks.values())
    assert not [k for k in stage_one(spt_run["run"]) if k.startswith("diagnosis") or k.startswith("data/val")]
    assert spt_run["result"]["diagnosis"] in ("learning", "at_chance")  # checked: stage 2 validated once


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_a_rerun_of_a_finished_spt_run_skips_both_stages(spt_run: dict, listops_root: Path, tmp_path: Path) -> None:
    run = copy_of(spt_run["run"], tmp_path)
    encoder = (run / stages.STAGE_DIR / stages.ENCODER).read_bytes()
    cfg = compose_config([*TINY_SPT, f"paths.data_dir={listops_root}", f"paths.cache_dir={tmp_path / 'cache'}",
                          f"paths.output_dir={run}"])
    result, messages = train_logged(cfg)
    assert result["skipped_rerun"] is True and result["global_step"] == 6
    assert not [m for m in messages if m.startswith(("stage 1 of 2", "stage 2 of 2"))]
    assert (run / stages.STAGE_DIR / stages.ENCODER).read_bytes() == encoder
    assert not [m for m in messages if m.startswith("building")]  # no data cache built either


def test_rerun_true_sets_stage_one_aside_too_and_pretrains_again(spt_run: dict, listops_root: Path, tmp_path: Path) -> None:
    run = copy_of(spt_run["run"], tmp_path)
    cfg = compose_config([*TINY_SPT, f"paths.data_dir={listops_root}", f"paths.cache_dir={spt_run['cache']}",
                          f"paths.output_dir={run}", "rerun=true"])
    result, messages = train_logged(cfg)
    (previous,) = run.glob("previous-*")
    assert (previous / stages.STAGE_DIR / stages.ENCODER).is_file() and (previous / "result.json").is_file()
    assert any(m.startswith("stage 1 of 2") for m in messages) and any(m.startswith("stage 2 of 2") for m in messages)
    again = stage_one(run)
    assert again["global_step"] == 3 and "skipped_rerun" not in result
    # the same command from scratch: the same numbers (timings aside)
    assert again["pretrain/loss"] == stage_one(previous)["pretrain/loss"]
    assert result["test/acc"] == spt_run["result"]["test/acc"] and result["budget/total_steps"] == 9


# --- exact resume from a kill in either stage ------------------------------------------------------------------------

# Stage 1: 8 steps of 16 rows (6 batches an epoch); stage 2: 12 steps of 16 (validated at epoch ends, steps 6 and 12).
# A periodic checkpoint every 4 steps in both, so each mid-epoch kill resumes mid-epoch from step 4 (stage 1) or 8.
KILL_RUN = ["experiment=quick", "model=transformer", "logger=csv", "~callbacks.progress_bar", "task.datamodule.num_workers=0",
            "task.batch_size=16", "task.max_length=64", "model.d_model=16", "model.net.head_hidden=16",
            "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2", "model.net.backbone.d_ff=32",
            "trainer.max_steps=12", "trainer.max_epochs=-1", "trainer.log_every_n_steps=1", "checkpoint_every_n_steps=4",
            "pretrain=spt", "pretrain.max_steps=8", "pretrain.batch_size=16", "pretrain.scheduler.warmup_steps=2"]
# case -> (LRA_BENCH_FAULT, the stage the kill left unfinished); faults fire once, at the first stage that gets there
KILLS = {
    "stage1_mid_epoch-SIGKILL": ("train_batch@5:SIGKILL", 1),
    "stage1_encoder_written-SIGKILL": ("result_write:SIGKILL", 1),  # encoder.pt written, stage 1's result.json not
    "stage2_mid_epoch-SIGKILL": ("train_batch@10:SIGKILL", 2),  # past stage 1's 8 steps: only stage 2 gets there
}
TIMED = ("wall_time_s", "pretrain/wall_time_s", "budget/total_wall_time_s")


def outcome(result_json: Path) -> dict:
    result = json.loads(result_json.read_text())
    kept = {k: v for k, v in result.items() if k not in TIMED and not k.startswith("perf/")}
    kept["overrides"] = [o for o in result["overrides"] if not o.startswith("paths.")]
    if "best_checkpoint" in kept:
        kept["best_checkpoint"] = Path(result["best_checkpoint"]).name
    return kept


@pytest.fixture(scope="module")
def kills(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run, each case's killed attempt (the run folder's state recorded after it), then its rerun."""
    from tests.test_resume import write_kill_data

    root = tmp_path_factory.mktemp("spt-kills")
    data = root / "data"
    write_kill_data(data)

    def argv(logs: Path) -> list[str]:
        return [*KILL_RUN, f"paths.data_dir={data}", f"paths.log_dir={logs}"]

    attempts = [{"argv": argv(root / "reference"), "log": str(root / "reference.log")}]
    attempts += [{"argv": argv(root / case), "env": {"LRA_BENCH_FAULT": f"{fault}:{root / case}.fired"},
                  "log": str(root / f"{case}-killed.log")} for case, (fault, _) in KILLS.items()]
    codes = forked(attempts)
    assert codes[0] == 0, (root / "reference.log").read_text()[-3000:]
    after_kill = {}
    for case in KILLS:
        folder = run_folder(root / case)
        after_kill[case] = {p: (folder / p).exists() for p in ("pretrain/encoder.pt", "pretrain/result.json", "checkpoints",
                                                                "result.json")}
    reruns = forked([{"argv": argv(root / case), "log": str(root / f"{case}-rerun.log")} for case in KILLS])
    return {"root": root, "reference": run_folder(root / "reference"), "killed": dict(zip(KILLS, codes[1:])),
            "after_kill": after_kill, "rerun": dict(zip(KILLS, reruns))}


@pytest.mark.parametrize("case", list(KILLS))
def test_a_spt_run_killed_in_either_stage_reruns_to_the_uninterrupted_run(case: str, kills: dict) -> None:
    root, reference = kills["root"], kills["reference"]
    killed_log, rerun_log = (root / f"{case}-killed.log").read_text(), (root / f"{case}-rerun.log").read_text()
    assert (root / f"{case}.fired").exists(), f"the fault never fired: {killed_log[-2000:]}"
    assert kills["killed"][case] == -9, killed_log[-3000:]
    assert kills["rerun"][case] == 0, rerun_log[-3000:]
    stage = KILLS[case][1]
    state = kills["after_kill"][case]
    assert not state["result.json"] and state["pretrain/result.json"] == (stage == 2)
    assert state["checkpoints"] == (stage == 2)  # stage 2 had not started when stage 1 was killed
    assert state["pretrain/encoder.pt"] == (stage == 2 or "encoder_written" in case)
    folder = run_folder(root / case)
    resumed = folder / stages.STAGE_DIR if stage == 1 else folder
    assert f"resuming from {resumed / 'checkpoints'}/" in rerun_log, rerun_log[-3000:]
    assert outcome(folder / "result.json") == outcome(reference / "result.json")
    assert outcome(folder / "pretrain" / "result.json") == outcome(reference / "pretrain" / "result.json")
    got, expected = (torch.load(f / "pretrain" / "encoder.pt", weights_only=True)["state_dict"] for f in (folder, reference))
    assert got.keys() == expected.keys()
    assert [k for k in got if not torch.equal(got[k], expected[k])] == []
    # stage 2's final weights: periodic.ckpt holds step 12 in both (an uninterrupted run's last.ckpt stays at its
    # step-6 epoch end when max_steps ends the next epoch; a resumed run's is rewritten at 12: Lightning's bookkeeping)
    final = [torch.load(f / "checkpoints" / "periodic.ckpt", map_location="cpu", weights_only=False) for f in (folder, reference)]
    assert [c["global_step"] for c in final] == [12, 12]
    got, expected = (c["state_dict"] for c in final)
    assert [k for k in got if not torch.equal(got[k], expected[k])] == []
    for sub in (stages.STAGE_DIR, "."):
        assert rows(folder / sub) == rows(reference / sub), f"{sub}/csv/metrics.csv differs"


def test_the_kill_reference_pretrains_8_steps_then_fine_tunes_12(kills: dict) -> None:
    """What the cases count on: stage 1 stops at step 8 (so train_batch@10 is stage 2's), stage 2 at 12."""
    reference = kills["reference"]
    assert stage_one(reference)["global_step"] == 8
    assert json.loads((reference / "result.json").read_text())["budget/total_steps"] == 20


# --- every model ---------------------------------------------------------------------------------------------------

OWN_MODEL = ("gated_conv", "pkg://lra_example.conf")  # examples/lra_example, found through LRA_BENCH_CONFIG_PATH
CAUSAL = {"sparse_transformer"}  # LRA's Sparse Transformer: "all attention patterns are causal" (conf/model)


def tiny_spt_config(model: str, data: Path, out: Path) -> DictConfig:
    """``task=listops model=<model>``, the model's own small config with one layer (check_model's quick build) at
    length 64, 2 self-pretraining steps and 2 fine-tuning steps of 4 rows, one validation and one test batch."""
    from lra_bench.benchmarks.model_configs import length_overrides
    from lra_bench.checks.build import quick_overrides

    overrides = ["task=listops", f"model={model}", "trainer=cpu", "trainer.devices=1", "logger=csv", "~callbacks.progress_bar",
                 f"paths.data_dir={data}", f"paths.output_dir={out}", "task.datamodule.num_workers=0", "task.batch_size=4",
                 "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.accumulate_grad_batches=1",
                 "trainer.val_check_interval=1.0", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                 "pretrain=spt", "pretrain.max_steps=2", "pretrain.batch_size=4"]
    cfg = compose_config(overrides)
    return compose_config([*overrides, *length_overrides(cfg, 64), *quick_overrides(cfg)])


@pytest.mark.parametrize("model", [*available("model"), OWN_MODEL[0]])
def test_every_model_self_pretrains_and_fine_tunes(model: str, listops_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if model == OWN_MODEL[0]:
        monkeypatch.setenv("LRA_BENCH_CONFIG_PATH", OWN_MODEL[1])
    result = train_mod.train(tiny_spt_config(model, listops_root, tmp_path / "run"))
    first = stage_one(tmp_path / "run")
    objective = "causal" if model in CAUSAL else "masked"
    assert (first["model"], first["global_step"], first["objective"]) == (model, 2, objective)
    assert math.isfinite(first["pretrain/loss"]) and first["pretrain/loss"] > 0
    assert (result["model"], result["global_step"], result["protocol"]) == (model, 2, "spt")
    assert result["pretrain/objective"] == objective and result["budget/total_steps"] == 4
    assert math.isfinite(result["test/loss"])
