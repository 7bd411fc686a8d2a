"""Audit of ``pretrain=spt`` (issue 23): cases where a two-stage run could report a number that is not what it says.

- a checkpoint resumed across protocols (from scratch under ``pretrain=spt``, or the reverse) would be labelled with
  the command's protocol while its weights are the other's: refused like a model change;
- a time-cut stage 1 given more time after stage 2 started from its encoder would train on, rewrite ``encoder.pt``
  and its ``result.json``, and the budget would count steps stage 2 never started from: stage 1 is settled;
- stage 2's ``result.json`` says why stage 1 stopped (``pretrain/stop_reason``: ``max_time`` for a cut one);
- a run folder reused with another model, seed or recipe (``paths.output_dir`` given) would fine-tune the stale
  encoder when its weights fit: stage 2 holds its config against the one stage 1 recorded in ``encoder.pt``;
- ``train=false`` would test untrained weights as an SPT run, and ``budget_fraction`` with a ``trainer.max_epochs``
  would stop stage 2 before its share of the budget: both refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from lra_bench import train as train_mod
from lra_bench.errors import ConfigError
from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.attention.transformer import TransformerEncoder
from lra_bench.pretraining import stages
from lra_bench.pretraining.objectives import Denoiser
from lra_bench.training.options import check_options
from lra_bench.training.resume_rules import resume_rule_line
from tests.conftest import TINY_RUN, compose_config

SCRATCH = {"model": {"d_model": 32}, "task": {"name": "listops"}, "seed": 1, "pretrain": None}
SPT = SCRATCH | {"pretrain": {"name": "spt", "mask_rate": 0.1, "max_steps": 4}}


@pytest.mark.parametrize(("saved", "command"), [(SCRATCH, SPT), (SPT, SCRATCH),
                                                (SPT, SPT | {"pretrain": SPT["pretrain"] | {"mask_rate": 0.5}})],
                         ids=["scratch-checkpoint-as-spt", "spt-checkpoint-as-scratch", "other-recipe"])
def test_a_checkpoint_never_resumes_under_another_pretraining_protocol_or_recipe(saved: dict, command: dict) -> None:
    with pytest.raises(ConfigError, match=r"^cannot resume c.ckpt with other pretrain"):
        resume_rule_line("c.ckpt", 20, saved, command)
    assert "matches" in resume_rule_line("c.ckpt", 20, SPT, SPT)


def write_result(folder: Path, **values) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps({"task": "listops", "model": "transformer", **values}))


def test_the_budget_says_when_stage_one_was_cut_by_its_time_limit(tmp_path: Path) -> None:
    write_result(tmp_path / stages.STAGE_DIR, stop_reason="max_time", max_time_s=60.0, global_step=7,
                 **{"train/tokens_seen": 700, "wall_time_s": 60.5})
    figures = stages.budget(tmp_path, {"global_step": 10, "train/tokens_seen": 1000, "wall_time_s": 9.5})
    assert figures["pretrain/stop_reason"] == "max_time"
    assert (figures["budget/total_steps"], figures["budget/total_tokens"], figures["budget/total_wall_time_s"]) == (17, 1700, 70.0)


def test_stage_two_started_is_read_from_its_own_folder_only(tmp_path: Path) -> None:
    (tmp_path / stages.STAGE_DIR / "checkpoints").mkdir(parents=True)
    (tmp_path / stages.STAGE_DIR / "checkpoints" / "last.ckpt").write_bytes(b"stage 1's")
    assert not stages.stage_two_started(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "periodic.ckpt").write_bytes(b"stage 2's")
    assert stages.stage_two_started(tmp_path)


@pytest.mark.slow
def test_a_time_cut_stage_one_is_not_trained_on_once_stage_two_started_from_it(listops_root: Path,
                                                                                tmp_path: Path) -> None:
    """A finished two-stage run whose stage 1 says it was cut by a 60 s limit and whose stage 2 was killed before its
    result: the same command with no time limit resumes stage 2 and leaves stage 1 (encoder and result) as it was."""

    def config(*extra: str):
        return compose_config([*TINY_RUN, f"paths.data_dir={listops_root}", f"paths.output_dir={tmp_path / 'run'}",
                               "pretrain=spt", "pretrain.max_steps=2", "trainer.max_epochs=-1", "trainer.max_steps=2",
                               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *extra])

    first = train_mod.train(config())
    run, stage_one = tmp_path / "run", tmp_path / "run" / stages.STAGE_DIR
    cut = json.loads((stage_one / "result.json").read_text()) | {"stop_reason": "max_time", "max_time_s": 60.0}
    (stage_one / "result.json").write_text(json.dumps(cut))
    encoder = (stage_one / stages.ENCODER).read_bytes()
    (run / "result.json").unlink()  # stage 2 killed after its checkpoints, before its result
    again = train_mod.train(config())
    assert (stage_one / stages.ENCODER).read_bytes() == encoder
    assert json.loads((stage_one / "result.json").read_text()) == cut
    assert again["pretrain/steps"] == first["pretrain/steps"] == 2 and again["pretrain/stop_reason"] == "max_time"
    assert again["budget/total_steps"] == 4


def tiny_net(seed: int) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(TransformerEncoder(16, n_layers=1, n_heads=2, d_ff=32), 16, num_classes=10, vocab_size=20,
                              head_hidden=32)


@pytest.mark.parametrize(("key", "value"), [("model.name", "linear_transformer"), ("seed", 2),
                                            ("pretrain.mask_rate", 0.3)])
def test_a_stale_encoder_that_fits_is_refused_when_stage_one_ran_another_model_seed_or_recipe(
        tmp_path: Path, key: str, value) -> None:
    stage_one = {"model": {"name": "transformer", "d_model": 16}, "task": {"name": "listops"}, "seed": 1,
                 "pretrain": {"name": "spt", "mask_rate": 0.1}, "paths": {"output_dir": str(tmp_path / "pretrain")}}
    path = tmp_path / stages.ENCODER
    stages.save_encoder(path, Denoiser(tiny_net(1), "masked").encoder_state(), {"global_step": 3,
                                                                                "run_config": stage_one})
    same = OmegaConf.create(stage_one)
    same.paths.output_dir = str(tmp_path)  # where things go is not compared
    assert stages.start_from_encoder(tiny_net(2), path, OmegaConf.to_container(same)) == {"global_step": 3}
    other = OmegaConf.create(stage_one)
    OmegaConf.update(other, key, value)
    with pytest.raises(ConfigError) as refused:
        stages.start_from_encoder(tiny_net(2), path, OmegaConf.to_container(other))
    message = str(refused.value)
    assert message.startswith(f"{path} was pretrained with other {key} (") and "rerun=true" in message
    assert "\n" not in message


@pytest.mark.parametrize(("overrides", "line"), [
    (["pretrain=spt", "train=false"], r"pretrain=spt with train=false: neither stage would train"),
    (["pretrain=spt_half", "trainer.max_steps=10", "trainer.max_epochs=2"],
     r"pretrain\.budget_fraction=0\.5: trainer\.max_steps=10 \(trainer\.max_epochs=2\) must be the budget of both stages"),
])
def test_a_run_that_would_mislabel_or_unbalance_its_budget_is_refused_in_one_line(overrides: list, line: str) -> None:
    cfg = compose_config([*TINY_RUN, "paths.data_dir=/nowhere", "paths.output_dir=/nowhere", *overrides])
    with pytest.raises(ConfigError, match=rf"^{line}") as refused:
        check_options(cfg)
    assert "\n" not in str(refused.value)
    with open_dict(cfg):
        cfg.train, cfg.trainer.max_epochs = True, -1
    check_options(cfg)  # train=true, and epochs that do not decide: accepted


def test_a_given_checkpoint_before_stage_one_finished_is_refused_in_one_line(tmp_path: Path) -> None:
    """``ckpt_path`` is resumed by stage 2 only: with stage 1 not finished in the run folder, stage 1 would train
    from scratch for weights the run never uses, its budget counted in result.json. Refused before anything runs."""
    cfg = compose_config([*TINY_RUN, "paths.data_dir=/nowhere", f"paths.output_dir={tmp_path / 'run'}", "pretrain=spt",
                          f"ckpt_path={tmp_path / 'other' / 'last.ckpt'}"])
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*last\.ckpt with pretrain=spt: stage 1 has not finished in "
                                          r".*; rerun without ckpt_path") as refused:
        train_mod.train(cfg)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run" / stages.STAGE_DIR).exists()
