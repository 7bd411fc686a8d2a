"""Every model option checked before anything is built (lra_bench/models/options): the bad-option corpus, generated
from the schemas (every option of every built-in model, out of range and of the wrong type), the issue's named bad
sizes, fits and typos, no false alarm on any preset, the README's tables, and the command line (one line, exit 2).

The checks run on the composed config with the bad value set in it: nothing is built, so the corpus is fast.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.config import PROJECT_ROOT, available, check_override_keys
from lra_bench.errors import ConfigError
from lra_bench.models.options.builtin import SCHEMAS
from lra_bench.models.options.check import check_model_options, model_option_problems
from lra_bench.models.options.rules import (BOOL, NOT_SET, Choice, Either, Float, Int, ListOf, MappingOf, Nullable, Option,
                                            Rule, Schema, lookup)
from lra_bench.models.options.table import BEGIN, END, readme_tables
from lra_bench.training.options import check_options
from tests.conftest import compose_config

MODELS = available("model")


@functools.lru_cache(maxsize=None)
def base(*overrides: str) -> DictConfig:
    """The composed config for ``overrides``, composed once per module (copy it before changing it)."""
    return compose_config(list(overrides))


def with_values(overrides: tuple[str, ...], values: dict[str, Any]) -> DictConfig:
    """``base(*overrides)`` with ``values`` (dotted keys) set as a command line would set them."""
    cfg = copy.deepcopy(base(*overrides))
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def the_error(cfg: DictConfig) -> str:
    with pytest.raises(ConfigError) as info:
        check_options(cfg)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def bad_values(rule: Rule) -> list[Any]:
    """Values ``rule`` must refuse: just outside each bound, and one of the wrong type."""
    if isinstance(rule, Nullable):
        return bad_values(rule.rule)
    if isinstance(rule, Either):
        return [v for v in bad_values(rule.rules[0]) if not rule.accepts(v)] or ["not-a-value"]
    if isinstance(rule, Int):
        out: list[Any] = [2.5, "many"]
        out += [rule.lo - 1] if rule.lo is not None else []
        out += [rule.hi + 1] if rule.hi is not None else []
        out += [(rule.lo or 0) + 1] if rule.step == 2 else []
        return out
    if isinstance(rule, Float):
        out = ["high"]
        if rule.lo is not None:
            out += [rule.lo] if rule.lo_open else [rule.lo - 0.5]
        if rule.hi is not None:
            out += [rule.hi, rule.hi + 0.5] if rule.hi_open else [rule.hi + 0.5]
        return out
    if rule is BOOL:
        return ["yes", 1]
    if isinstance(rule, Choice):
        return ["no-such-choice", 3]
    if isinstance(rule, (ListOf, MappingOf)):
        return ["not-a-container"]
    raise AssertionError(f"no bad values for {rule!r}: add them here")


def corpus(schema: Schema) -> list[tuple[Option, Any]]:
    return [(o, v) for o in schema.options for v in bad_values(o.rule)]


def test_every_built_in_model_has_a_schema_and_every_schema_a_model() -> None:
    assert sorted(SCHEMAS) == sorted(MODELS)


@pytest.mark.parametrize("model", sorted(SCHEMAS))
def test_every_key_of_the_model_config_is_declared(model: str) -> None:
    """No key of conf/model/<model>.yaml lacks a rule (the unknown-key check would name it), and no declared key
    is missing from it (a stale declaration), but the optional ones."""
    cfg = base(f"model={model}")
    assert model_option_problems(cfg) == []
    raw = OmegaConf.to_container(cfg.model, resolve=False)
    A = "net.backbone.attention."
    optional = {"head_hidden",  # Mega's: set by presets only, read by net.head_hidden
                "net.embed_init", "net.embed_fan_in",  # S5's and LRU's one-hot Dense; other models keep the normal init
                A + "grouping", A + "self_mask", A + "key_norm", A + "score_scale", A + "out_proj"}  # null: lra_code's
    missing = [o.key for o in SCHEMAS[model].options if lookup(raw, o.key) is NOT_SET and o.key not in optional]
    assert missing == []


LRA_CODE_MODELS = sorted(m for m, s in SCHEMAS.items() if (o := s.option("net.lra_code")) and o.rule is BOOL)


@pytest.mark.parametrize("model", LRA_CODE_MODELS)
def test_lra_code_true_is_no_false_alarm_on_the_models_with_lras_code(model: str) -> None:
    """lra_code=true switches the model's keys to LRA's code: the relations it brings hold on the model's config."""
    assert len(LRA_CODE_MODELS) == 11 and "luna" not in LRA_CODE_MODELS
    cfg = base(f"model={model}", "lra_code=true")
    assert cfg.model.net.lra_code is True
    check_options(cfg)


def set_in(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


@pytest.mark.parametrize("model", sorted(SCHEMAS))
def test_every_option_of_every_model_refuses_bad_values_with_one_line(model: str) -> None:
    """The generated corpus: for every declared option, each bad value set in the composed config (as written and
    resolved: the check's own input, without re-resolving per case) gives one line naming model.<key>, the value and
    the valid range, and nothing is reported before it."""
    cfg = base(f"model={model}")
    raw, resolved = OmegaConf.to_container(cfg.model, resolve=False), OmegaConf.to_container(cfg.model, resolve=True)
    schema = SCHEMAS[model]
    cases = corpus(schema)
    assert len(cases) >= 2 * len(schema.options)
    for option, value in cases:
        raw_case, resolved_case = copy.deepcopy(raw), copy.deepcopy(resolved)
        set_in(raw_case, option.key, value)
        set_in(resolved_case, option.key, value)
        problems = schema.problems_in(raw_case, resolved_case, cfg.task.max_length)
        assert problems, (option.key, value)
        message = problems[0]
        assert "\n" not in message and message.startswith(f"model.{option.key}="), (option.key, value, message)
        assert f"must be {option.rule.text}" in message, (option.key, value, message)


# The issue's bad sizes, fits and typos (and more), one case each: (base overrides, values set, key named, message).
LISTOPS = ("task=listops",)
NAMED: dict[str, tuple[tuple[str, ...], dict[str, Any], str, str]] = {
    # S5: dropout 1.5 zeroed every layer, 1.0 divided by zero; 0 or -1 layers trained with no layers
    "s5-dropout-1.5": (("model=s5",), {"model.net.backbone.dropout": 1.5}, "model.net.backbone.dropout", r"=1.5: must be a number in \[0, 1\)"),
    "s5-dropout-1.0": (("model=s5",), {"model.net.backbone.dropout": 1.0}, "model.net.backbone.dropout", r"=1.0: must be a number in \[0, 1\)"),
    "s5-n-layers-0": (("model=s5",), {"model.net.backbone.n_layers": 0}, "model.net.backbone.n_layers", "=0: must be an integer >= 1"),
    "s5-n-layers--1": (("model=s5",), {"model.net.backbone.n_layers": -1}, "model.net.backbone.n_layers", "=-1: must be an integer >= 1"),
    "s5-d-state-0": (("model=s5",), {"model.net.backbone.d_state": 0}, "model.net.backbone.d_state", "=0: must be an integer >= 1"),
    "s5-blocks-0": (("model=s5",), {"model.net.backbone.blocks": 0}, "model.net.backbone.blocks", "=0: must be an integer >= 1"),
    "s5-d-state-not-in-blocks": (("model=s5",), {"model.net.backbone.d_state": 12}, "model.net.backbone.d_state",
                                 "=12: must split into blocks = 4 blocks of even size"),
    "s5-dt-range": (("model=s5",), {"model.net.backbone.dt_min": 0.5}, "model.net.backbone.dt_min", r"=0.5: must be <= model.net.backbone.dt_max = 0.1"),
    "s5-bn-momentum": (("model=s5",), {"model.net.backbone.bn_momentum": 1.5}, "model.net.backbone.bn_momentum", r"must be a number in \[0, 1\)"),
    "s5-lr-factor-0": (("model=s5",), {"model.net.backbone.lr_factor": 0}, "model.net.backbone.lr_factor", "=0: must be a number > 0"),
    "s5-n-layers-float": (("model=s5",), {"model.net.backbone.n_layers": 2.5}, "model.net.backbone.n_layers", "=2.5: must be an integer >= 1"),
    # LRU and Mamba: a zero state ran
    "lru-d-state-0": (("model=lru",), {"model.net.backbone.d_state": 0}, "model.net.backbone.d_state", "=0: must be an integer >= 1"),
    "lru-n-layers-0": (("model=lru",), {"model.net.backbone.n_layers": 0}, "model.net.backbone.n_layers", "=0: must be"),
    "lru-dropout-1": (("model=lru",), {"model.net.backbone.dropout": 1.0}, "model.net.backbone.dropout", r"must be a number in \[0, 1\)"),
    "lru-ring-inverted": (("model=lru",), {"model.net.backbone.r_min": 0.9, "model.net.backbone.r_max": 0.5},
                          "model.net.backbone.r_min", "=0.9: must be <= model.net.backbone.r_max = 0.5"),
    "lru-r-max-above-1": (("model=lru",), {"model.net.backbone.r_max": 1.5}, "model.net.backbone.r_max", r"must be a number in \[0, 1\]"),
    "mamba-d-state-0": (("model=mamba",), {"model.net.backbone.d_state": 0}, "model.net.backbone.d_state", "=0: must be an integer >= 1"),
    "mamba-n-layers--1": (("model=mamba",), {"model.net.backbone.n_layers": -1}, "model.net.backbone.n_layers", "=-1: must be"),
    "mamba-d-conv-0": (("model=mamba",), {"model.net.backbone.d_conv": 0}, "model.net.backbone.d_conv", "=0: must be"),
    "mamba-expand-0": (("model=mamba",), {"model.net.backbone.expand": 0}, "model.net.backbone.expand", "=0: must be"),
    "mamba-dt-rank-0": (("model=mamba",), {"model.net.backbone.dt_rank": 0}, "model.net.backbone.dt_rank", r"=0: must be null \(ceil"),
    "mamba-dropout-1.5": (("model=mamba",), {"model.net.backbone.dropout": 1.5}, "model.net.backbone.dropout", r"must be a number in \[0, 1\)"),
    # attention zoo: a rank-0 projection, 0 hash rounds, heads that do not divide, blocks that do not fit
    "linformer-k-0": (("model=linformer",), {"model.net.backbone.attention.k": 0}, "model.net.backbone.attention.k", "=0: must be an integer >= 1"),
    "linformer-k--1": (("model=linformer",), {"model.net.backbone.attention.k": -1}, "model.net.backbone.attention.k", "=-1: must be"),
    "linformer-heads-3": (("model=linformer",), {"model.net.backbone.n_heads": 3}, "model.net.backbone.n_heads",
                          r"=3: must divide the attention width \(d_qkv, or d_model when null\) = 128"),
    "linformer-shorter-than-task": (LISTOPS + ("model=linformer",), {"model.net.backbone.max_length": 1000}, "model.net.backbone.max_length",
                                    r"=1000: the position table is shorter than the task's sequences \(task.max_length=2000\); must be >= 2000"),
    "reformer-n-hashes-0": (("model=reformer",), {"model.net.backbone.attention.n_hashes": 0}, "model.net.backbone.attention.n_hashes", "=0: must be"),
    "reformer-odd-buckets": (("model=reformer",), {"model.net.backbone.attention.n_buckets": 7}, "model.net.backbone.attention.n_buckets",
                             "=7: must be an even integer >= 2"),
    "reformer-chunk-0": (("model=reformer",), {"model.net.backbone.attention.chunk_length": 0}, "model.net.backbone.attention.chunk_length", "=0: must be"),
    "reformer-heads": (("model=reformer",), {"model.net.backbone.n_heads": 5}, "model.net.backbone.n_heads", r"=5: must divide the attention width \(d_model"),
    "luna-proj-length-0": (("model=luna",), {"model.net.backbone.proj_length": 0}, "model.net.backbone.proj_length", "=0: must be an integer >= 1"),
    "luna-heads-3": (("model=luna",), {"model.net.backbone.n_heads": 3}, "model.net.backbone.n_heads", "=3: must divide d_model = 128"),
    "luna-d-qkv": (("model=luna",), {"model.net.backbone.d_qkv": 64}, "model.net.backbone.d_qkv", "=64: must be null or d_model = 128"),
    "luna-prenorm-embed-norm": (("model=luna",), {"model.net.backbone.prenorm": True}, "model.net.backbone.embed_norm",
                                "=true: goes with post-LN layers"),
    "luna-dropout-1": (("model=luna",), {"model.net.backbone.attn_dropout": 1.0}, "model.net.backbone.attn_dropout", r"must be a number in \[0, 1\)"),
    "luna-shorter-than-task": (("task=text", "model=luna"), {"model.net.backbone.max_length": 1024}, "model.net.backbone.max_length",
                               r"shorter than the task's sequences \(task.max_length=4000\); must be >= 4000"),
    "bigbird-block-0": (("model=bigbird",), {"model.net.backbone.attention.block_size": 0}, "model.net.backbone.attention.block_size", "=0: must be"),
    "bigbird-block-too-long": (LISTOPS + ("model=bigbird",), {"model.net.backbone.attention.block_size": 4096},
                               "model.net.backbone.attention.block_size",
                               r"=4096: a block does not fit the task's sequences \(task.max_length=2000\); must be <= 2000"),
    "bigbird-random-blocks--1": (("model=bigbird",), {"model.net.backbone.attention.num_rand_blocks": -1},
                                 "model.net.backbone.attention.num_rand_blocks", "=-1: must be an integer >= 0"),
    "local-block-0": (("model=local",), {"model.net.backbone.attention.block_size": 0}, "model.net.backbone.attention.block_size", "=0: must be"),
    "local-block-too-long": (("experiment=quick", "model=local"), {"model.net.backbone.attention.block_size": 128},
                             "model.net.backbone.attention.block_size", r"a group does not fit the task's sequences \(task.max_length=120\)"),
    "sinkhorn-block-too-long": (("experiment=quick", "model=sinkhorn"), {"model.net.backbone.attention.block_size": 500},
                                "model.net.backbone.attention.block_size", "must be <= 120"),
    "sinkhorn-temperature-0": (("model=sinkhorn",), {"model.net.backbone.attention.temperature": 0}, "model.net.backbone.attention.temperature",
                               "=0: must be a number > 0"),
    "sinkhorn-max-blocks-0": (("model=sinkhorn",), {"model.net.backbone.attention.max_num_blocks": 0},
                              "model.net.backbone.attention.max_num_blocks", "=0: must be"),
    "sparse-block-with-cls": (("experiment=quick", "model=sparse_transformer"),
                              {"model.net.pooling": "cls", "model.net.backbone.max_length": 121, "model.net.backbone.attention.block_size": 122},
                              "model.net.backbone.attention.block_size", r"\(task.max_length=120 \+ 1 CLS token\); must be <= 121"),
    "sparse-c-above-block": (("model=sparse_transformer",), {"model.net.backbone.attention.c": 60}, "model.net.backbone.attention.c",
                             "=60: must be <= model.net.backbone.attention.block_size = 50"),
    "longformer-window-0": (("model=longformer",), {"model.net.backbone.attention.window_size": 0},
                            "model.net.backbone.attention.window_size", "=0: must be"),
    "longformer-global--1": (("model=longformer",), {"model.net.backbone.attention.n_global": -1},
                             "model.net.backbone.attention.n_global", "=-1: must be an integer >= 0"),
    "performer-features-0": (("model=performer",), {"model.net.backbone.attention.n_features": 0},
                             "model.net.backbone.attention.n_features", "=0: must be"),
    "performer-softmax-deterministic": (("model=performer",), {"model.net.backbone.attention.kernel": "softmax"},
                                        "model.net.backbone.attention.kernel", "='softmax': needs random features"),
    "synthesizer-k-0": (("model=synthesizer",), {"model.net.backbone.attention.k": 0}, "model.net.backbone.attention.k", "=0: must be"),
    "synthesizer-mode": (("model=synthesizer",), {"model.net.backbone.attention.mode": "sparse"}, "model.net.backbone.attention.mode",
                         "='sparse': must be one of random, factorized_random, dense"),
    "linear-eps-0": (("model=linear_transformer",), {"model.net.backbone.attention.eps": 0}, "model.net.backbone.attention.eps", "=0: must be a number > 0"),
    "transformer-heads-3": (("model=transformer",), {"model.net.backbone.n_heads": 3}, "model.net.backbone.n_heads", "=3: must divide"),
    "transformer-heads-d-qkv": (("model=transformer",), {"model.net.backbone.d_qkv": 100, "model.net.backbone.n_heads": 8},
                                "model.net.backbone.n_heads", "=8: must divide the attention width .* = 100"),
    "transformer-cls-overflows-table": (LISTOPS + ("model=transformer",), {"model.net.pooling": "cls", "model.net.backbone.max_length": 2000},
                                        "model.net.backbone.max_length", r"\(task.max_length=2000 \+ 1 CLS token\); must be >= 2001"),
    "transformer-task-longer": (("experiment=lra/transformer-listops",), {"task.max_length": 4000},
                                "model.net.backbone.max_length", "=2001: the position table is shorter .* must be >= 4001"),
    "transformer-heads-bool": (("model=transformer",), {"model.net.backbone.n_heads": True}, "model.net.backbone.n_heads", "=true: must be an integer"),
    # Mega, S4 and the classifier
    "mega-chunk-full": (("model=mega_chunk",), {"model.net.backbone.chunk_size": -1}, "model.net.backbone.chunk_size", "=-1: must be an integer >= 1"),
    "mega-full-longer-than-table": (LISTOPS + ("model=mega",), {"model.net.backbone.max_positions": 1024}, "model.net.backbone.max_positions",
                                    r"the relative-position table \(full attention\) is shorter than the task's sequences"),
    "mega-rotary-odd": (("model=mega",), {"model.net.backbone.rel_pos": "rotary", "model.net.backbone.d_qk": 33},
                        "model.net.backbone.d_qk", "=33: must be even with rel_pos=rotary"),
    "mega-n-layers-0": (("model=mega",), {"model.net.backbone.n_layers": 0}, "model.net.backbone.n_layers", "=0: must be"),
    "mega-dropout-1": (("model=mega",), {"model.dropout": 1.0}, "model.dropout", r"=1.0: must be a number in \[0, 1\)"),
    "s4-d-state-odd": (("model=s4",), {"model.net.backbone.d_state": 63}, "model.net.backbone.d_state", "=63: must be an even integer >= 2"),
    "s4-dplr-lin": (("model=s4",), {"model.net.backbone.init": "lin"}, "model.net.backbone.init", "='lin': must be legs with mode=dplr"),
    "s4-n-ssm": (("model=s4",), {"model.net.backbone.n_ssm": 3}, "model.net.backbone.n_ssm", "=3: must divide d_model = 128"),
    "s4-c-init-times-b": (("model=s4",), {"model.net.backbone.c_init": "normal_times_b"}, "model.net.backbone.c_init",
                          "='normal_times_b': must be normal with mode=dplr"),
    "s4-b-clip-null": (("model=s4",), {"model.net.backbone.b_clip": None}, "model.net.backbone.b_clip",
                       "=null: must be 2.0 with mode=dplr"),
    "s5-embed-init": (("model=s5",), {"model.net.embed_init": "xavier"}, "model.net.embed_init",
                      "='xavier': must be normal or lecun_onehot"),
    "s4d-lr-negative": (("model=s4d",), {"model.net.backbone.lr": -1}, "model.net.backbone.lr", "=-1: must be null"),
    "head-dropout-1": (("model=s4",), {"model.net.head_dropout": 1.0}, "model.net.head_dropout", r"must be a number in \[0, 1\)"),
    "embed-dropout-1.5": (("model=mamba",), {"model.net.embed_dropout": 1.5}, "model.net.embed_dropout", r"must be a number in \[0, 1\)"),
    "pooling-max": (("model=lru",), {"model.net.pooling": "max"}, "model.net.pooling", "='max': must be one of mean, cls, first, sum"),
    "d-model-0": (("model=s5",), {"model.d_model": 0}, "model.d_model", "=0: must be an integer >= 1"),
    "head-activation-swish": (("model=s5",), {"model.net.head_activation": "swish"}, "model.net.head_activation",
                              "='swish': must be one of gelu, gelu_tanh, relu, tanh"),
    # lra_code: a run option, refused for models without LRA's code, and what each mechanism's LRA code fixes
    "lra-code-not-bool": (("model=transformer",), {"lra_code": "yes"}, "lra_code", "='yes': must be true .* or false"),
    "lra-code-on-s5": (("model=s5",), {"lra_code": True}, "lra_code", "=true reproduces LRA's released code.* model=s5 is not one of them"),
    "lra-code-on-luna": (("model=luna",), {"lra_code": True}, "lra_code", "model=luna is not one of them"),
    "luna-net-lra-code": (("model=luna",), {"model.net.lra_code": True}, "model.net.lra_code", "=true: must be false"),
    "lra-cosine-not-bool": (("model=s4",), {"scheduler.lra_cosine": "on"}, "scheduler.lra_cosine", "='on': must be true or false"),
    "reformer-lra-code-self-mask": (("model=reformer",), {"lra_code": True, "model.net.backbone.attention.self_mask": True},
                                    "model.net.backbone.attention.self_mask", "=true: lra_code=true runs LRA's code, where it is false: leave it null"),
    "reformer-lra-code-score-scale": (("model=reformer",), {"lra_code": True, "model.net.backbone.attention.score_scale": "standard"},
                                      "model.net.backbone.attention.score_scale", "='standard': .* where it is lra"),
    "reformer-lra-code-heads": (("model=reformer",), {"lra_code": True, "model.net.backbone.d_qkv": 96, "model.net.backbone.n_heads": 3},
                                "model.net.backbone.n_heads", r"=3: must divide the attention width .* = 128"),
    "local-lra-code-contiguous": (("model=local",), {"lra_code": True, "model.net.backbone.attention.grouping": "contiguous"},
                                  "model.net.backbone.attention.grouping", "='contiguous': lra_code=true runs LRA's strided groups"),
    "sinkhorn-lra-code-not-local": (("model=sinkhorn",), {"lra_code": True, "model.net.backbone.attention.local": False},
                                    "model.net.backbone.attention.local", "=false: lra_code=true .* where it is true: set it true"),
    "bigbird-lra-code-no-pad-block": (("model=bigbird",), {"lra_code": True, "model.net.backbone.attention.extra_pad_block": False},
                                      "model.net.backbone.attention.extra_pad_block", "=false: lra_code=true pads as LRA does"),
    "longformer-lra-code-globals": (("model=longformer",), {"lra_code": True, "model.net.backbone.attention.n_global": 1},
                                    "model.net.backbone.attention.n_global", "=1: lra_code=true runs LRA's Longformer"),
    "block-lra-code-postnorm": (("model=transformer",), {"lra_code": True, "model.net.backbone.prenorm": False},
                                "model.net.backbone.lra_code", "=true: lra_code=true runs LRA's block, pre-LN with GELU"),
    # typos of option names that reach the config (with +, or in a preset): named with the closest option
    "typo-added-n-layer": (("model=s5",), {"model.net.backbone.n_layer": 2}, "model.net.backbone.n_layer",
                           "=2: not an option of model s5; did you mean model.net.backbone.n_layers"),
    "typo-added-block-size": (("model=bigbird",), {"model.net.backbone.attention.blocksize": 32}, "model.net.backbone.attention.blocksize",
                              "did you mean model.net.backbone.attention.block_size"),
    "typo-added-top-level": (("model=mega",), {"model.d_modle": 32}, "model.d_modle", "did you mean model.d_model"),
}


def test_the_named_corpus_covers_the_issue() -> None:
    assert len(NAMED) >= 51
    covered = {o.split("=")[1] for overrides, *_ in NAMED.values() for o in overrides if o.startswith("model=")}
    assert covered == set(MODELS)


@pytest.mark.parametrize("name", list(NAMED))
def test_each_named_bad_value_gives_one_line_naming_it(name: str) -> None:
    overrides, values, key, message = NAMED[name]
    text = the_error(with_values(overrides, values))
    assert text.startswith(key + "="), text
    assert re.search(message, text), text


OVERRIDE_TYPOS = [
    (["model=s5", "model.net.backbone.n_layer=2"], "model.net.backbone.n_layer: no such option .* did you mean model.net.backbone.n_layers\\?"),
    (["model=lru", "model.net.backbone.d_sate=8"], "did you mean model.net.backbone.d_state\\?"),
    (["model=linformer", "model.net.backbone.attention.kk=8"], "model.net.backbone.attention.kk: no such option .*\\+model.net.backbone.attention.kk=8"),
    (["model=s4", "seed=1,2", "model.net.backbone.dstate=8,16"], "did you mean model.net.backbone.d_state\\?"),
]


@pytest.mark.parametrize("argv, message", OVERRIDE_TYPOS, ids=[a[-1] for a, _ in OVERRIDE_TYPOS])
def test_a_typo_in_an_override_key_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        check_override_keys(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and re.search(message, err), err


def test_valid_overrides_pass_the_key_check() -> None:
    check_override_keys(["model=s5", "model.net.backbone.n_layers=2", "seed=1,2", "+model.net.extra=1", "-m"])


def test_a_model_without_a_schema_is_not_checked() -> None:
    cfg = with_values(("model=s5",), {"model.name": "my_own", "model.net.backbone.n_layers": 0})
    assert model_option_problems(cfg) == []


def test_a_mechanism_of_ones_own_in_the_transformer_block_is_left_to_its_constructor() -> None:
    mine = {"_target_": "my_package.MyAttention", "_partial_": True, "window": 7}
    assert model_option_problems(with_values(("model=transformer",), {"model.net.backbone.attention": mine})) == []


def test_a_users_schema_is_loaded_from_options_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_options.py").write_text(
        "from lra_bench.models.options.builtin import S5\nfrom dataclasses import replace\nMINE = replace(S5, model='mine')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = with_values(("model=s5",), {"model.name": "mine", "model.options_schema": "my_options:MINE",
                                      "model.net.backbone.n_layers": 0})
    assert model_option_problems(cfg) == ["model.net.backbone.n_layers=0: must be an integer >= 1"]
    cfg.model.options_schema = "my_options:NOPE"
    with pytest.raises(ConfigError, match=r"model.options_schema='my_options:NOPE': cannot load it"):
        check_model_options(cfg)


def test_the_example_models_schema_checks_its_options() -> None:
    import importlib.util

    path = PROJECT_ROOT / "examples/lra_example/lra_example/options.py"  # this tree's, whichever lra_example is installed
    spec = importlib.util.spec_from_file_location("lra_example_options", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    GATED_CONV = module.GATED_CONV
    cfg = OmegaConf.load(PROJECT_ROOT / "examples/lra_example/lra_example/conf/model/gated_conv.yaml")
    full = OmegaConf.create({"task": {"max_length": 100, "num_classes": 2, "vocab_size": 10, "input": "tokens", "pair": False},
                             "model": cfg})
    assert GATED_CONV.problems(full) == []
    full.model.net.backbone.kernel_size = 4
    assert GATED_CONV.problems(full) == ["model.net.backbone.kernel_size=4: must be odd (a centred kernel)"]
    full.model.net.backbone.n_layers = 0
    assert GATED_CONV.problems(full)[0] == "model.net.backbone.n_layers=0: must be an integer >= 1"


def test_the_readme_option_tables_are_the_generated_ones() -> None:
    text = (PROJECT_ROOT / "README.md").read_text()
    assert BEGIN in text and END in text, "README lacks the generated option tables"
    inside = text[text.index(BEGIN): text.index(END) + len(END)]
    assert inside == readme_tables(), "README option tables differ: paste `python -m lra_bench.models.options.table`"


LRA_PRESETS = [e for e in available("experiment") if e.startswith("lra/")]
PRESET_GROUPS = {task: [[f"experiment={e}"] for e in LRA_PRESETS if e.endswith(f"-{task}")] for task in available("task")}
PRESET_GROUPS |= {quick: [[f"experiment={quick}", f"model={m}"] for m in MODELS] for quick in ("quick", "quick_pathfinder")}


@pytest.mark.slow
@pytest.mark.parametrize("group", list(PRESET_GROUPS))
def test_no_false_alarm_on_any_preset_or_quick_experiment(group: str) -> None:
    """Every lra/* preset of a task, or a quick experiment with every model, passes (19 compositions a group; each
    model's own config: test_every_key_of_the_model_config_is_declared)."""
    alarms = {" ".join(r): p for r in PRESET_GROUPS[group] if (p := model_option_problems(compose_config(r)))}
    assert alarms == {}
    assert sum(map(len, PRESET_GROUPS.values())) == len(LRA_PRESETS) + 2 * len(MODELS) >= 114 + 38


CLI = [
    (["lra_bench.train", "model=s5", "model.net.backbone.dropout=1.5"], "error: model.net.backbone.dropout=1.5: must be a number in [0, 1)"),
    (["lra_bench.train", "model=s5", "model.net.backbone.n_layer=2"], "error: model.net.backbone.n_layer: no such option"),
    (["lra_bench.describe", "experiment=lra/s5-sudoku"], "error: unknown experiment 'lra/s5-sudoku'. Did you mean lra/s5-listops? "
                                                         "Valid: lra/<model>-<task> with model in bigbird"),
    (["lra_bench.check_model", "model=s5", "quick=true", "model.net.backbone.d_state=0"],
     "error: model.net.backbone.d_state=0: must be an integer >= 1"),
]


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_the_command_line_answers_a_bad_option_with_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", *argv, f"hydra.run.dir={tmp_path / 'run'}", "logger=csv"]
                          if argv[0] == "lra_bench.train" else [sys.executable, "-m", *argv],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_check_model_refuses_an_unknown_task_and_device_before_building(capsys: pytest.CaptureFixture[str]) -> None:
    from lra_bench.check_model import main

    assert main(["model=s4", "task=sudoku"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'sudoku'; valid tasks: image, listops, pathfinder, pathx, retrieval, text")
    assert main(["model=s4", "device=tpu"]) == 2
    assert capsys.readouterr().err.strip() == "error: device=tpu: must be cpu, cuda or cuda:<index>"
