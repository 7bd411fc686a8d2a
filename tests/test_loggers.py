"""W&B mode resolution: offline on its own, with one note, without credentials or network."""

from __future__ import annotations

import pytest

from lra_bench.training.loggers import resolve_wandb_mode


def test_no_credentials_means_offline_with_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    mode, note = resolve_wandb_mode("auto")
    assert mode == "offline" and "no credentials" in note and "wandb sync" in note


def test_credentials_without_a_reachable_server_mean_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real check: the W&B host is unreachable (a closed port on localhost stands for it)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://127.0.0.1:9")
    mode, note = resolve_wandb_mode("auto")
    assert mode == "offline" and "unreachable" in note


def test_explicit_modes_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("online") == ("offline", None)
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("offline") == ("offline", None)
    with pytest.raises(ValueError, match="logger.wandb.mode"):
        resolve_wandb_mode("sometimes")


def test_a_run_with_logger_none_trains_tests_and_writes_its_result(run_config) -> None:
    """``logger=none`` (README section 5): no logger at all, the run still ends with its result.json."""
    import json
    from pathlib import Path

    from lra_bench.train import train

    cfg = run_config("logger=none", "trainer.max_epochs=1")
    assert not cfg.logger
    result = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "result.json").read_text())["global_step"] == result["global_step"] == 6
    assert 0.0 <= result["test/acc"] <= 1.0 and not (out / "csv").exists() and not (out / "wandb").exists()
