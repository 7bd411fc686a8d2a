"""The backbone protocol and configs from outside the repository: the protocol class and its duck-typed check, the
classifier's refusal of a backbone's declared limits, the LRA_BENCH_CONFIG_PATH search-path plugin, model names
found on the whole search path, and another model's preset applied to a model that does not take its settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from hydra_plugins.lra_bench_searchpath.searchpath import ENV_VAR, as_search_path, configured_entries, split_entries
from lra_bench.config import available, check_names, drop_foreign_preset_keys, search_path_note
from lra_bench.errors import ConfigError
from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.masks import length_mask
from lra_bench.models.protocol import INPUTS, Backbone, protocol_problem
from tests.conftest import compose_config


class Masked(Backbone):
    """The smallest protocol-abiding backbone: a Linear per position, zeros at pads."""

    def __init__(self, d_model: int, supported: tuple[str, ...] = INPUTS, limit: int | None = None):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.supported_inputs = supported
        self.max_length = limit

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * length_mask(lengths, x.size(1))[..., None]


MODEL_YAML = """name: {name}
d_model: 8
net:
  _target_: lra_bench.models.classifier.SequenceClassifier
  d_model: ${{model.d_model}}
  num_classes: ${{task.num_classes}}
  vocab_size: ${{task.vocab_size}}
  input: ${{task.input}}
  pair: ${{task.pair}}
  backbone:
    _target_: tests.test_protocol.Masked
    d_model: ${{model.d_model}}
"""


def write_model(root: Path, name: str) -> Path:
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "model" / f"{name}.yaml").write_text(MODEL_YAML.format(name=name))
    return root


# --- the protocol ---------------------------------------------------------------------------------------------------

def test_the_base_class_declares_any_input_and_any_length_and_its_docstring_states_the_contract() -> None:
    assert Backbone.supported_inputs == ("tokens", "real") and Backbone.max_length is None
    for clause in ("(B, L, D)", "lengths", "zero", "Bidirectional", "_optim", "supported_inputs", "max_length", "Never infer"):
        assert clause in Backbone.__doc__


def test_protocol_problem_accepts_a_duck_typed_backbone_and_names_what_is_wrong_otherwise() -> None:
    class Duck(nn.Module):  # not a Backbone subclass: the check is duck-typed
        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            return x

    assert protocol_problem(Duck()) is None and protocol_problem(Masked(4)) is None
    assert "forward must take (x: (B, L, D), lengths: (B,)); it takes (input)" in protocol_problem(nn.Identity())
    assert "not a torch.nn.Module" in protocol_problem(lambda x, lengths: x)
    assert "supported_inputs must be a non-empty subset" in protocol_problem(Masked(4, supported=("pixels",)))
    assert "max_length must be a positive int or None" in protocol_problem(Masked(4, limit=0))


def test_the_classifier_refuses_a_non_backbone_with_one_line() -> None:
    with pytest.raises(TypeError, match=r"Identity.forward must take .* \(the backbone protocol: lra_bench/models/protocol.py\)"):
        SequenceClassifier(nn.Identity(), 4, 2, vocab_size=5)


def test_the_classifier_refuses_a_task_input_the_backbone_does_not_support() -> None:
    SequenceClassifier(Masked(4, supported=("tokens",)), 4, 2, vocab_size=5)
    with pytest.raises(ValueError, match=r"^Masked takes tokens input \(its supported_inputs\), not this task's 'real'$"):
        SequenceClassifier(Masked(4, supported=("tokens",)), 4, 2, input="real")


def test_the_classifier_refuses_a_batch_longer_than_max_length_counting_the_cls_token() -> None:
    net = SequenceClassifier(Masked(4, limit=10), 4, 2, vocab_size=5, pooling="cls")
    net(torch.ones(2, 9, dtype=torch.long), torch.tensor([9, 3]))  # 9 tokens + CLS = 10: fits
    with pytest.raises(ValueError, match=r"sequence length 11 \(with the CLS token\) exceeds Masked's max_length \(10\)"):
        net(torch.ones(2, 10, dtype=torch.long), torch.tensor([10, 3]))


# --- LRA_BENCH_CONFIG_PATH --------------------------------------------------------------------------------------------

def test_entries_split_at_pathsep_but_not_at_the_colon_of_a_scheme() -> None:
    assert split_entries("pkg://a.conf:/x/y:file:///z: ", sep=":") == ["pkg://a.conf", "/x/y", "file:///z"]
    assert split_entries("pkg://a.conf;C:\\conf", sep=";") == ["pkg://a.conf", "C:\\conf"]


def test_plain_directories_become_absolute_file_urls_and_schemes_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert as_search_path("conf") == f"file://{tmp_path / 'conf'}"
    assert as_search_path("pkg://a.conf") == "pkg://a.conf"
    monkeypatch.setenv(ENV_VAR, os.pathsep.join(["pkg://a.conf", "conf"]))
    assert configured_entries() == ["pkg://a.conf", f"file://{tmp_path / 'conf'}"]


def test_a_model_in_a_folder_on_the_env_variable_is_available_and_composes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tiny_masked" not in available("model")
    monkeypatch.setenv(ENV_VAR, str(write_model(tmp_path / "conf", "tiny_masked")))
    assert "tiny_masked" in available("model") and "mega" in available("model")
    cfg = compose_config(["model=tiny_masked", "paths.output_dir=/tmp/lra_bench_protocol_test"])
    check_names(cfg)
    from hydra.utils import instantiate

    assert isinstance(instantiate(cfg.model.net).backbone, Masked)


def test_a_model_on_hydra_searchpath_is_available_and_passes_check_names(tmp_path: Path) -> None:
    url = f"file://{write_model(tmp_path / 'conf', 'tiny_searchpath')}"
    assert "tiny_searchpath" in available("model", [url]) and "tiny_searchpath" not in available("model", [])
    cfg = compose_config([f"hydra.searchpath=[{url}]", "model=tiny_searchpath", "paths.output_dir=/tmp/lra_bench_protocol_test"],
                         return_hydra_config=True)
    check_names(cfg)  # reads hydra.searchpath from the composed Hydra node
    cfg.model.name = "tiny_renamed"
    with pytest.raises(ConfigError, match=rf"unknown model 'tiny_renamed'; valid models: .*tiny_searchpath.*\(conf/model/ and {url}\)"):
        check_names(cfg)


def test_an_entry_hydra_cannot_read_is_named_in_the_unknown_name_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "pkg://no_such_package_lra.conf")
    assert "pkg://no_such_package_lra.conf (not available" in search_path_note()  # Hydra skips it silently
    cfg = compose_config(["paths.output_dir=/tmp/lra_bench_protocol_test"])
    cfg.model.name = "nope"
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*pkg://no_such_package_lra.conf \(not available"):
        check_names(cfg)


# --- another model's preset -------------------------------------------------------------------------------------------

def test_another_models_preset_applies_its_width_and_task_but_not_its_backbone_settings() -> None:
    cfg = compose_config(["experiment=lra/mega-listops", "model=transformer", "model.net.backbone.n_heads=2",
                          "paths.output_dir=/tmp/lra_bench_protocol_test"])
    assert "n_dim" in cfg.model.net.backbone  # Mega's settings leaked into the Transformer's backbone node
    changed = drop_foreign_preset_keys(cfg, "lra/mega-listops", ["model.net.backbone.n_heads=2"])
    assert {"model.net.backbone.n_dim", "model.net.backbone.d_hidden", "model.net.backbone.attention", "model.dropout"} <= set(changed)
    backbone = cfg.model.net.backbone
    assert "n_dim" not in backbone and backbone.attention == "sdpa" and backbone.n_layers == 2  # transformer.yaml's own
    assert backbone.n_heads == 2  # the command line's override is applied again
    assert cfg.model.d_model == 80 and cfg.task.max_length == 2000 and cfg.trainer.gradient_clip_val == 1.0  # Mega's recipe
    assert cfg.model.net.head_hidden == compose_config(["experiment=lra/mega-listops"]).model.net.head_hidden  # classifier: preset's
    from hydra.utils import instantiate

    cfg.task.max_length = 64
    assert instantiate(cfg.model.net).backbone.__class__.__name__ == "TransformerEncoder"


def test_a_models_own_preset_and_a_variant_on_its_base_preset_change_nothing() -> None:
    own = compose_config(["experiment=lra/mega-listops", "paths.output_dir=/tmp/lra_bench_protocol_test"])
    assert drop_foreign_preset_keys(own, "lra/mega-listops") == []
    variant = compose_config(["experiment=lra/transformer-listops", "model=bigbird", "paths.output_dir=/tmp/lra_bench_protocol_test"])
    assert drop_foreign_preset_keys(variant, "lra/transformer-listops") == []  # the same TransformerEncoder: sizes apply
    assert variant.model.net.backbone.n_layers == 6


def test_the_running_apps_preset_choice_and_plus_overrides_are_read_from_the_hydra_node() -> None:
    cfg = compose_config(["experiment=lra/transformer-image", "model=mega", "+model.net.extra_note=1",
                          "paths.output_dir=/tmp/lra_bench_protocol_test"], return_hydra_config=True)
    changed = drop_foreign_preset_keys(cfg)
    assert "model.net.backbone.n_heads" in changed and "model.net.extra_note" not in changed  # added on purpose
    assert "n_heads" not in cfg.model.net.backbone and cfg.model.net.extra_note == 1
