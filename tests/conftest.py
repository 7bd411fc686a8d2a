"""Shared fixtures: tiny generated data in the release layout, and Hydra composition in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from data_prep.listops import ListOpsSpec, generate
from lra_bench.config import CONFIG_DIR

os.environ.setdefault("WANDB_SILENT", "true")
# a user's own configs (README: "Your own model") must not change what the built-in tests see; tests that need
# them set it themselves
os.environ.pop("LRA_BENCH_CONFIG_PATH", None)

TINY_LISTOPS_SPEC = ListOpsSpec(max_depth=4, max_args=4, min_length=10, max_length=60)
TINY_LISTOPS_COUNTS = {"train": 96, "val": 40, "test": 40}

# A model and trainer small enough for a few steps in a couple of seconds on CPU.
TINY_RUN = [
    "trainer=cpu",
    "logger=csv",
    "~callbacks.progress_bar",
    "task.batch_size=16",
    "task.max_length=64",
    "task.datamodule.num_workers=0",
    "model.d_model=32",
    "model.net.head_hidden=32",
    "model.net.backbone.n_layers=1",
    "model.net.backbone.n_heads=2",
    "model.net.backbone.d_ff=64",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
]


def compose_config(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """Compose a config as the entry points do, without running Hydra's app."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)


@pytest.fixture(scope="session")
def listops_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding tiny ListOps under the release's doubled prefix lra_release/lra_release/."""
    root = tmp_path_factory.mktemp("data")
    generate(
        root / "lra_release" / "lra_release" / "listops-1000",
        TINY_LISTOPS_COUNTS,
        seed=0,
        spec=TINY_LISTOPS_SPEC,
        progress=False,
    )
    return root


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B in offline mode with every file under a temp dir; the env is restored after the test."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


@pytest.fixture
def run_config(listops_root: Path, tmp_path: Path):
    """Compose a tiny training config on the tiny ListOps data, outputs in tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(
            [*TINY_RUN, f"paths.data_dir={listops_root}", f"paths.output_dir={tmp_path / 'run'}", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def all_tasks_root(listops_root: Path) -> Path:
    """One data root with tiny data for all six tasks in their official layouts (ListOps from listops_root)."""
    from tests.fixtures import write_release_tasks

    root = listops_root
    if not (root / "aclImdb").exists():
        write_release_tasks(root)
    return root
