"""Every published preset (model x task) trains a few steps: sizes shrunk, everything else as published.

``make test`` trains each model's ListOps preset (and every preset composes and builds in test_configs.py);
``make test-slow`` trains all of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lra_bench import train as train_mod
from lra_bench.config import available
from tests.conftest import compose_config

PRESETS = [e for e in available("experiment") if e.startswith("lra/")]
# Synthesizer on Path-X learns (L, L) logits per head: 2 GB even shrunk to one layer of two heads. It composes and
# builds (for its shapes) in test_configs.py; training it is GPU work.
NOT_TRAINED_HERE = {"lra/synthesizer-pathx"}

SHRINK = {
    "mega": ["model.d_model=16", "model.net.head_hidden=32", "model.net.backbone.n_layers=1", "model.net.backbone.d_hidden=16",
             "model.net.backbone.d_ffn=16", "model.net.backbone.d_qk=8", "model.net.backbone.n_dim=2"],
    "transformer": ["model.d_model=16", "model.net.head_hidden=16", "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2",
                    "model.net.backbone.d_qkv=16", "model.net.backbone.d_ff=16", "model.net.backbone.attn_dropout=0.0"],
    "s4": ["model.d_model=16", "model.net.backbone.n_layers=1", "model.net.backbone.d_state=4"],
    "luna": ["model.d_model=16", "model.net.head_hidden=16", "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2",
             "model.net.backbone.d_ff=16", "model.net.backbone.proj_length=8", "model.net.backbone.attn_dropout=0.0",
             "model.net.backbone.d_qkv=null"],
    "mamba": ["model.d_model=16", "model.net.backbone.n_layers=1", "model.net.backbone.d_state=4"],
    "s5": ["model.d_model=16", "model.net.backbone.n_layers=1", "model.net.backbone.d_state=8", "model.net.backbone.blocks=2"],
    "lru": ["model.d_model=16", "model.net.backbone.n_layers=1", "model.net.backbone.d_state=8"],
}


def family(model: str) -> str:
    if model in SHRINK:
        return model
    return "mega" if model.startswith("mega") else "s4" if model.startswith("s4") else "transformer"


def preset_param(preset: str):
    task = preset.removeprefix("lra/").split("-")[1]
    return pytest.param(preset, marks=() if task == "listops" else pytest.mark.slow)


def test_there_is_a_preset_for_every_model_and_task() -> None:
    expected = {f"lra/{m}-{t}" for m in available("model") for t in available("task")}
    missing = sorted(expected - set(PRESETS))
    assert not missing, f"models without a preset for some task: {missing}"


@pytest.mark.parametrize("preset", [preset_param(p) for p in PRESETS if p not in NOT_TRAINED_HERE])
def test_preset_trains_a_few_steps(preset: str, all_tasks_root: Path, tmp_path: Path) -> None:
    model, task = preset.removeprefix("lra/").split("-")
    extra = ["task.batch_size=4"]
    if task in ("listops", "text", "retrieval"):
        extra.append("task.max_length=64")
    if task == "image":
        extra.append("task.datamodule.val_size=8")
    if task == "pathx":
        extra.append("task.batch_size=1")  # 16K tokens: attention over 4K chunks or the full length is heavy on CPU
    if model == "mega" and task == "pathx":
        extra.append("model.net.backbone.chunk_size=1024")  # full attention over 16K tokens does not fit a test
    cfg = compose_config([
        f"experiment={preset}", "trainer=cpu", "trainer.devices=1", "logger=csv", "~callbacks.progress_bar",
        f"paths.data_dir={all_tasks_root}", f"paths.output_dir={tmp_path}", "task.datamodule.num_workers=0",
        "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.accumulate_grad_batches=1", "trainer.val_check_interval=1.0",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *SHRINK[family(model)], *extra,
    ])
    result = train_mod.train(cfg)
    assert result["global_step"] == 2 and result["model"] == model and result["task"] == task
    assert result["perf/tokens_per_sec"] > 0
