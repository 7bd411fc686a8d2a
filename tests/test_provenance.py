"""Every preset value matches its provenance record (lra_bench/provenance/records/<model>.yaml).

Composes each preset in conf/experiment/lra (compose only, no model build) and fails on a value that differs from
its record, a key the preset sets without a record, a record of a key that does not exist, and a preset whose
model has no record block. ``describe`` prints each value's source beside it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from lra_bench.config import CONFIG_DIR, PROJECT_ROOT
from lra_bench.errors import ConfigError
from lra_bench.provenance.check import EXPERIMENT_DIR, annotate, problems, required_keys
from lra_bench.provenance.harness_keys import is_harness_only
from lra_bench.provenance.loader import RECORDS_DIR, load_model_records, preset_records, record_files
from tests.conftest import compose_config

PRESETS = sorted(p.stem for p in (EXPERIMENT_DIR / "lra").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))

# Models whose records another branch (presets_ssm) writes: until its record file is merged, their presets are
# skipped here. The lead removes this list after the merge; a model listed here whose file exists is checked anyway.
PENDING_RECORDS: set[str] = set()  # presets_ssm's seven models have landed


def compose_preset(preset: str) -> DictConfig:
    """The preset composed as the entry points compose it (no model is built)."""
    return compose_config([f"experiment=lra/{preset}", "paths.output_dir=/tmp/lra_bench_provenance"])


def _model_of(preset: str) -> str:
    return max((m for m in MODELS if preset.startswith(f"{m}-")), key=len)


def test_every_preset_and_model_is_covered() -> None:
    assert len(PRESETS) == 114 and len(MODELS) == 19
    files = record_files()
    assert set(files) <= set(MODELS), f"records for unknown models: {sorted(set(files) - set(MODELS))}"
    missing = [m for m in MODELS if m not in files and m not in PENDING_RECORDS]
    assert not missing, f"models without lra_bench/provenance/records/<model>.yaml: {missing}"
    for model, path in files.items():
        presets = set(load_model_records(path).presets)
        expected = {p for p in PRESETS if _model_of(p) == model}
        assert presets == expected, f"{path.name}: presets {sorted(presets ^ expected)} missing or unknown"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_matches_its_records(preset: str) -> None:
    entries = preset_records(preset)
    if entries is None:
        if _model_of(preset) in PENDING_RECORDS:
            pytest.skip(f"{_model_of(preset)}: records pending (PENDING_RECORDS)")
        pytest.fail(f"{preset}: no record block in lra_bench/provenance/records/{_model_of(preset)}.yaml")
    cfg = compose_preset(preset)
    found = problems(cfg, EXPERIMENT_DIR / "lra" / f"{preset}.yaml", entries)
    assert not found, f"{preset}:\n  " + "\n  ".join(found)


# --- the checker itself catches each kind of drift ----------------------------------------------------------------

def _transformer_listops():
    cfg = compose_preset("transformer-listops")
    return cfg, EXPERIMENT_DIR / "lra" / "transformer-listops.yaml", dict(preset_records("transformer-listops"))


def test_checker_flags_a_value_that_differs_from_its_record() -> None:
    cfg, path, entries = _transformer_listops()
    cfg.model.net.backbone.n_layers = 4  # HEAD's value, not the recorded paper/093bfc6 value
    (line,) = problems(cfg, path, entries)
    assert line.startswith("model.net.backbone.n_layers: the preset resolves to 4, its record says 6")
    assert "093bfc6 lra_benchmarks/listops/configs/base_listops_config.py:48" in line


def test_checker_flags_a_key_without_record_and_a_record_without_key() -> None:
    cfg, path, entries = _transformer_listops()
    del entries["optimizer.weight_decay"]
    entries["model.net.backbone.no_such_key"] = entries["optimizer.lr"]
    assert problems(cfg, path, entries) == [
        "optimizer.weight_decay: set by the preset but has no record (add one with source+line or deviation)",
        "model.net.backbone.no_such_key: recorded but not a key of the composed config",
    ]


def test_required_keys_follow_inherited_presets_and_skip_harness_keys() -> None:
    keys = required_keys(EXPERIMENT_DIR / "lra" / "linformer-listops.yaml")  # an empty body on transformer-listops
    assert {"model.net.backbone.n_layers", "optimizer.lr", "task.max_length", "optimizer.betas"} <= keys
    assert "trainer.val_check_interval" not in keys and is_harness_only("trainer.val_check_interval")
    assert not is_harness_only("trainer.max_steps") and is_harness_only("paths.data_dir")


@pytest.mark.parametrize("bad, message", [
    ("sources: {}\npresets: {x-listops: {a: {value: 1, deviation: why}}}\n", "is not one of this model's"),
    ("sources: {}\npresets: {m-listops: {a: {value: 1}}}\n", "needs exactly one of source (with line) and deviation"),
    ("sources: {}\npresets: {m-listops: {a: {value: 1, source: s, line: 3}}}\n", "source 's' is not under sources"),
    ("sources: {s: {repo: o/r, commit: abc, file: f.py}}\npresets: {}\n", "is not 40 lowercase hex digits"),
    ("sources: {s: {repo: o/r, commit: " + "a" * 40 + ", file: f.py}}\n"
     "presets: {m-listops: {a: {value: 1, source: s, line: 0}}}\n", "line must be the 1-based line number"),
    ("sources: {}\npresets: {m-listops: {a: {value: 1, deviation: why, note: n}}}\n",
     "a deviation is one non-empty reason"),
])
def test_a_malformed_record_file_is_refused_with_one_line(tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError, match="m.yaml") as err:
        load_model_records(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_exponent_floats_without_a_dot_load_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("sources: {}\npresets: {m-listops: {optimizer.lr: {value: 1e-3, deviation: why}}}\n")
    assert load_model_records(path).presets["m-listops"]["optimizer.lr"].value == 1e-3


# --- describe shows the sources ------------------------------------------------------------------------------------

def test_annotate_puts_each_source_beside_its_value_and_flags_overrides() -> None:
    from omegaconf import OmegaConf

    cfg, _, entries = _transformer_listops()
    cfg.optimizer.weight_decay = 0.0
    text = annotate(OmegaConf.to_yaml(cfg, resolve=True), cfg, entries)
    lines = {ln.split("#")[0].strip(): ln for ln in text.splitlines() if "#" in ln}
    source = "google-research/long-range-arena@093bfc6 lra_benchmarks/listops/configs/base_listops_config.py:48"
    assert source in lines["n_layers: 6"]
    assert "OVERRIDDEN (preset: 0.1)" in lines["weight_decay: 0.0"]
    assert "betas:" in lines and "run_name: transformer-listops" not in lines  # a harness key has no record


def test_describe_prints_each_value_with_its_source() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lra_bench.describe", "experiment=lra/luna-retrieval", "optimizer.lr=1e-3"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "# values annotated with their source: lra_bench/provenance/records (lra/luna-retrieval)" in out.stdout
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("pair_features:"))
    assert "nli  # XuezheMax/fairseq-apollo@3644d20 fairseq/models/lra/model.py:197" in line
    line = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("lr:"))
    assert "OVERRIDDEN (preset: 0.0005)" in line
    assert RECORDS_DIR.is_dir()
