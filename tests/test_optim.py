"""Optimizer parameter groups (with the per-parameter override hook) and the lr schedule."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lra_bench.training.module import LRAModule
from lra_bench.training.optim import build_param_groups, describe_param_groups, lr_factor, resolve_warmup


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.ssm_A = nn.Parameter(torch.zeros(4, 2))
        self.ssm_A._optim = {"lr": 1e-3, "weight_decay": 0.0}
        self.ssm_dt = nn.Parameter(torch.zeros(4))
        self.ssm_dt._optim = {"weight_decay": 0.0}
        self.head = nn.Linear(4, 2)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.proj(self.embedding(tokens))).mean(1)
        return self.head(x + self.ssm_A.sum() + self.ssm_dt.sum())


def names(group: dict) -> set[str]:
    return set(group["names"])


def test_overrides_get_their_own_groups_and_the_rest_decays_by_default() -> None:
    groups = build_param_groups(Tiny(), lr=0.01, weight_decay=0.05)
    assert len(groups) == 3
    base, a, dt = groups
    assert names(base) == {"embedding.weight", "proj.weight", "proj.bias", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert base["lr"] == 0.01 and base["weight_decay"] == 0.05
    assert names(a) == {"ssm_A"} and a["lr"] == 1e-3 and a["weight_decay"] == 0.0
    assert names(dt) == {"ssm_dt"} and dt["lr"] == 0.01 and dt["weight_decay"] == 0.0
    text = describe_param_groups(groups)
    assert "Optimizer group 2 | 1 tensors | 4 params | lr 0.01 | weight_decay 0" in text


def test_norms_biases_and_embeddings_can_skip_weight_decay() -> None:
    base, no_decay, *_ = build_param_groups(Tiny(), lr=0.01, weight_decay=0.05, no_decay_norm_bias_embedding=True)
    assert names(base) == {"proj.weight", "head.weight"}
    assert names(no_decay) == {"embedding.weight", "proj.bias", "norm.weight", "norm.bias", "head.bias"}
    assert no_decay["weight_decay"] == 0.0


def test_schedule_shapes() -> None:
    # linear warmup from start_factor, then linear decay to final_factor
    assert lr_factor(0, 100, 10, "linear", start_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(5, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(10, 100, 10, "linear") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "linear") == pytest.approx(0.0)
    assert lr_factor(100, 100, 10, "linear", final_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10 + 90 // 3, 100, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))
    assert lr_factor(5, 100, 10, "linear", warmup_power=2) == pytest.approx(0.25)  # Path-X warmup power 2
    assert lr_factor(40, 100, 10, "rsqrt") == pytest.approx(0.5)
    assert lr_factor(80, 100, 10, "constant") == 1.0
    with pytest.raises(ValueError, match="scheduler.decay"):
        lr_factor(1, 10, 1, "step")


def test_warmup_from_steps_or_fraction() -> None:
    assert resolve_warmup(1000, None, 0.1) == 100
    assert resolve_warmup(1000, 30, None) == 30
    with pytest.raises(ValueError, match="only one"):
        resolve_warmup(1000, 30, 0.1)


class Loader(pl.LightningDataModule):
    def __init__(self, n: int, batch: int) -> None:
        super().__init__()
        self.n, self.batch = n, batch

    def train_dataloader(self):
        tokens = torch.randint(0, 10, (self.n, 5))
        ds = torch.utils.data.TensorDataset(tokens, torch.full((self.n,), 5), torch.randint(0, 2, (self.n,)))
        return torch.utils.data.DataLoader(ds, batch_size=self.batch)


@pytest.mark.parametrize("accumulate, epochs, expected", [(1, 3, 30), (2, 3, 15), (1, 1, 10)])
def test_schedule_length_is_derived_from_the_trainer(accumulate: int, epochs: int, expected: int, tmp_path) -> None:
    """The decay ends exactly at the last optimizer step: epochs x batches / accumulation."""
    module = LRAModule(Tiny(), 2, {"lr": 0.1, "weight_decay": 0.0}, {"decay": "linear", "warmup_fraction": 0.2})
    trainer = pl.Trainer(max_epochs=epochs, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, datamodule=Loader(n=40, batch=4))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == expected
    assert scheduler.last_epoch == expected
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # reached the end of the decay exactly
    warmup = round(0.2 * expected)
    assert scheduler.lr_lambdas[0](warmup) == pytest.approx(1.0)
    assert "Optimizer group 0" in module.param_group_summary


def test_a_preset_can_set_the_schedule_length_by_hand(tmp_path) -> None:
    """S4's AAN: 50,000 scheduled steps over a shorter run; the lr follows the longer schedule and never reaches 0."""
    module = LRAModule(Tiny(), 2, {"lr": 0.1, "weight_decay": 0.0},
                       {"decay": "cosine", "warmup_steps": 2, "warmup_fraction": None, "total_steps": 40})
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, datamodule=Loader(n=40, batch=4))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 20
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 * lr_factor(20, 40, 2, "cosine"))
    assert scheduler.get_last_lr()[0] > 0.04  # half-way down the 40-step cosine, not at its end


def test_lra_cosine_reaches_the_module_and_ends_above_zero(tmp_path) -> None:
    """scheduler.lra_cosine (set by lra_code): LRA's cycle of total_steps from the end of warmup, so the run ends at
    0.5 (1 - cos(pi warmup / total)) of the peak, not 0 (the formula is checked against LRA's in test_lra_code.py)."""
    module = LRAModule(Tiny(), 2, {"lr": 0.1, "weight_decay": 0.0},
                       {"decay": "cosine", "warmup_steps": 2, "warmup_fraction": None, "total_steps": None,
                        "lra_cosine": True})
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module, datamodule=Loader(n=40, batch=4))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 20
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 * 0.5 * (1 - math.cos(math.pi * 2 / 20)), rel=1e-12)


def test_a_schedule_shorter_than_its_warmup_warns_with_both_numbers(tmp_path, caplog) -> None:
    """Mega's preset (3,000 warmup steps) cut to a short run: said at start-up, and the chance diagnosis then
    advises no longer warmup."""
    from lra_bench.training.diagnosis import FIXES, fixes_for

    module = LRAModule(Tiny(), 2, {"lr": 0.1, "weight_decay": 0.0},
                       {"decay": "linear", "warmup_steps": 3000, "warmup_fraction": None})
    trainer = pl.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    with caplog.at_level("WARNING", logger="lra_bench.training.module"):
        trainer.fit(module, datamodule=Loader(n=400, batch=4))
    (warning,) = [r.getMessage() for r in caplog.records if "shorter than its warmup" in r.getMessage()]
    assert "3000 warmup steps" in warning and "30 optimizer steps" in warning and "0.97% of optimizer.lr" in warning
    assert "longer warmup" not in "; ".join(fixes_for(module)) and "schedule longer than its warmup" in fixes_for(module)[0]
    assert "longer warmup" in "; ".join(FIXES)


def test_a_schedule_longer_than_its_warmup_gives_no_warning(tmp_path, caplog) -> None:
    from lra_bench.training.diagnosis import FIXES, fixes_for

    module = LRAModule(Tiny(), 2, {"lr": 0.1, "weight_decay": 0.0}, {"decay": "linear", "warmup_fraction": 0.5})
    trainer = pl.Trainer(max_steps=10, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    with caplog.at_level("WARNING", logger="lra_bench.training.module"):
        trainer.fit(module, datamodule=Loader(n=400, batch=4))
    assert "shorter than its warmup" not in caplog.text and fixes_for(module) == FIXES
