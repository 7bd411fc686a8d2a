"""A real training run (fit, test on the best checkpoint) on every task, from each of its sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from lra_bench import train as train_mod
from tests.conftest import compose_config
from tests.fixtures import write_cifar_hub_layout, write_imdb_hub_layout, write_release_tasks

TINY = {
    "mega": ["model.d_model=16", "model.net.head_hidden=32", "model.net.backbone.n_layers=1", "model.net.backbone.d_hidden=16",
             "model.net.backbone.d_ffn=16", "model.net.backbone.d_qk=8", "model.net.backbone.n_dim=2", "model.net.backbone.truncation=64"],
    "mega_chunk": ["model.d_model=16", "model.net.head_hidden=32", "model.net.backbone.n_layers=1", "model.net.backbone.d_hidden=16",
                   "model.net.backbone.d_ffn=16", "model.net.backbone.d_qk=8", "model.net.backbone.n_dim=2",
                   "model.net.backbone.truncation=64", "model.net.backbone.chunk_size=64"],
    "transformer": ["model.d_model=16", "model.net.head_hidden=16", "model.net.backbone.n_layers=1", "model.net.backbone.n_heads=2",
                    "model.net.backbone.d_ff=16"],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("all_tasks")
    write_release_tasks(root)
    write_imdb_hub_layout(root / "hub_imdb")
    write_cifar_hub_layout(root / "hub_cifar")
    return root


CASES = [
    ("text", "mega", ["task.max_length=64"]),
    ("text", "transformer", ["task.max_length=64", "task.datamodule.tokenizer=chars", "task.vocab_size=null", "task.datamodule.min_freq=2"]),
    ("text", "mega_chunk", ["task.max_length=64", "task.datamodule.source=hub", "task.datamodule.hf_path=${paths.data_dir}/hub_imdb"]),
    ("retrieval", "mega", ["task.max_length=64"]),
    ("retrieval", "transformer", ["task.max_length=64", "model.net.pair_features=nli"]),
    ("image", "mega_chunk", ["task.input=real", "task.pixel_mean=0.48", "task.pixel_std=0.24", "task.datamodule.val_size=8"]),
    ("image", "transformer", ["task.datamodule.val_size=8", "task.datamodule.val_split=random", "task.datamodule.source=hub",
                              "task.datamodule.hf_path=${paths.data_dir}/hub_cifar"]),
    ("pathfinder", "mega", ["model.net.backbone.attention=laplace", "model.net.backbone.norm=batchnorm", "model.net.backbone.prenorm=true"]),
    ("pathx", "mega_chunk", ["task.input=real", "task.pixel_mean=0.5", "task.pixel_std=0.5"]),
]


@pytest.mark.parametrize("task, model, extra", CASES, ids=[f"{t}-{m}-{i}" for i, (t, m, _) in enumerate(CASES)])
def test_training_runs_and_tests_the_best_checkpoint(data_root: Path, tmp_path: Path, task: str, model: str, extra: list[str]) -> None:
    cfg = compose_config([
        f"task={task}", f"model={model}", "trainer=cpu", "logger=csv", "~callbacks.progress_bar",
        f"paths.data_dir={data_root}", f"paths.output_dir={tmp_path}", "task.batch_size=4", "task.datamodule.num_workers=0",
        "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1", *TINY[model], *extra,
    ])
    result = train_mod.train(cfg)
    assert result["global_step"] >= 2  # 3 batches, or all there are (Path-X fixture: 2)
    assert 0.0 <= result["test/acc"] <= 1.0 and result["best_checkpoint"]
    assert result["perf/tokens_per_sec"] > 0
