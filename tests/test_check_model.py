"""check_model: three deliberately broken backbones each fail with the right line (and pass the rest), the
perturbation exposes a mask a fresh model hides, the built-in models pass quick mode, and the command line's
parsing, table and exit codes."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lra_bench.check_model import main, parse, run_checks
from lra_bench.checks import FAIL, INFO, PASS
from lra_bench.checks.build import Target, perturb_like_trained
from lra_bench.checks.padding import backbone_padding
from lra_bench.checks.scaling import exponent
from lra_bench.config import PROJECT_ROOT, available
from lra_bench.models.masks import length_mask
from lra_bench.models.protocol import Backbone

CORRECTNESS = ("pads", "rows", "gradients", "numerics")


class AttendsToPadding(Backbone):
    """Softmax attention over every position, pads included: no key mask from ``lengths``."""

    def __init__(self, d_model: int):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        y = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(x.size(-1)), dim=-1) @ v
        return (x + y) * length_mask(lengths, x.size(1))[..., None]


class MixesBatchRows(Backbone):
    """Adds the mean over the batch's real positions: pads are masked, but every row sees every other row."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[..., None].to(x.dtype)
        batch_mean = (x * keep).sum((0, 1)) / keep.sum()
        return (self.proj(x) + batch_mean) * keep


class UnusedParameter(Backbone):
    """A parameter that never enters the forward pass (a layer built but not called)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)
        self.unused = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * length_mask(lengths, x.size(1))[..., None]


class EvalBatchNormLeak(Backbone):
    """Masks its input, then BatchNorm, then a convolution with no mask in between: at init (running mean 0,
    bias 0) the pads stay zero; a trained BatchNorm in eval mode puts a constant there, which the convolution carries
    into the real positions next to the pads."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)
        self.conv = nn.Conv1d(d_model, d_model, 3, padding=1, groups=d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = length_mask(lengths, x.size(1))[:, None, :].to(x.dtype)
        z = self.conv(self.norm(x.transpose(1, 2) * keep))
        return (z * keep).transpose(1, 2)


class MakesCpuTensor(Backbone):
    """Scales by ``torch.ones(x.size(-1))``, made without ``device=``: on a GPU it lands on the CPU and the product
    raises. Also reads its longest length with ``.item()`` (a host sync)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(x.size(-1))  # the device finding: no device=
        longest = int(lengths.max().item())  # the host sync
        return self.proj(x) * scale * length_mask(lengths, longest)[..., None]


MODEL_YAML = """name: {name}
d_model: 16
net:
  _target_: lra_bench.models.classifier.SequenceClassifier
  d_model: ${{model.d_model}}
  num_classes: ${{task.num_classes}}
  vocab_size: ${{task.vocab_size}}
  input: ${{task.input}}
  padding_idx: ${{oc.select:task.padding_idx,0}}
  head_hidden: 16
  pair: ${{task.pair}}
  backbone:
    _target_: tests.test_check_model.{cls}
    d_model: ${{model.d_model}}
"""
BROKEN = {"attends_to_padding": "AttendsToPadding", "mixes_batch_rows": "MixesBatchRows", "unused_parameter": "UnusedParameter",
          "not_a_backbone": "NotABackbone", "makes_cpu_tensor": "MakesCpuTensor"}


class NotABackbone(nn.Module):
    """A module whose forward takes no lengths (it would have to guess the padding)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@pytest.fixture(scope="module")
def broken_conf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A config folder with the broken models, as a user's own would be: ``file://...`` for hydra.searchpath."""
    root = tmp_path_factory.mktemp("broken_conf")
    (root / "model").mkdir()
    for name, cls in BROKEN.items():
        (root / "model" / f"{name}.yaml").write_text(MODEL_YAML.format(name=name, cls=cls))
    # a researcher's slips: a name that is not the file's, a _target_ with a typo
    (root / "model" / "misnamed.yaml").write_text(MODEL_YAML.format(name="wrongname", cls="MixesBatchRows"))
    (root / "model" / "target_typo.yaml").write_text(MODEL_YAML.format(name="target_typo", cls="MixesBatchRow"))
    return f"file://{root}"


def test_each_row_shows_its_threshold_and_a_failing_row_its_likely_cause(broken_conf: str) -> None:
    results = {r.name: r for r in run_checks(Target(model="attends_to_padding", quick=True, searchpath=(broken_conf,)),
                                             only=("pads", "gradients"))}
    values = results["pads: values at pads are ignored"]
    assert values.failed and "mask the keys of an attention" in values.cause
    assert values.threshold.startswith("≤ ") and values.threshold.endswith("(0.0001 × max(1, max |y|))")
    assert results["pads: backbone output is zero at pads"].threshold == "= 0 exactly"
    passed = results["gradients: every parameter, finite and non-zero"]
    assert not passed.failed and passed.threshold == "all tensors" and passed.cause == ""
    unused = {r.name: r for r in run_checks(Target(model="unused_parameter", quick=True, searchpath=(broken_conf,)),
                                            only=("gradients",))}["gradients: every parameter, finite and non-zero"]
    assert unused.failed and unused.cause == "a layer built but never called in forward"


def test_the_operations_row_separates_linear_from_quadratic_and_is_the_same_on_every_run(broken_conf: str) -> None:
    """FLOPs are counted, not timed: a loaded machine cannot move them (the time row's exponent moved from 0.12 to
    1.66 between two runs on a busy machine)."""
    def operations(model: str) -> tuple[str, str]:
        results = run_checks(Target(model=model, quick=True, searchpath=(broken_conf,)), only=("cost",))
        row = {r.name: r for r in results}["cost: operations of a training step"]
        return row.figure, row.detail

    linear, quadratic = operations("mixes_batch_rows"), operations("attends_to_padding")
    assert operations("mixes_batch_rows") == linear  # the same counts, to the digit
    slope = lambda figure: float(figure.split()[1])  # noqa: E731
    assert 0.95 <= slope(linear[0]) <= 1.05 and slope(quadratic[0]) >= 1.5, (linear, quadratic)
    assert "GFLOP" in linear[1]


def test_a_name_that_is_not_the_file_name_fails_the_check_naming_both(broken_conf: str) -> None:
    ((status, figure, detail),) = check("misnamed", broken_conf).values()
    assert status == FAIL and figure == "name is not the file's"
    assert "model=misnamed" in detail and "declares name: wrongname" in detail and "set name: misnamed" in detail


@pytest.mark.slow
def test_train_names_the_file_and_its_name_when_they_differ(broken_conf: str, tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "lra_bench.train", f"hydra.searchpath=[{broken_conf}]", "model=misnamed",
                           "logger=none", f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: model=misnamed: conf/model/misnamed.yaml declares name: wrongname; "
                                                    "a model's name must be its file name: set name: misnamed")


def test_a_target_typo_is_reported_whole_with_the_closest_existing_name(broken_conf: str) -> None:
    ((status, figure, detail),) = check("target_typo", broken_conf).values()
    assert status == FAIL and figure == "does not build"
    assert "_target_ 'tests.test_check_model.MixesBatchRow' cannot be loaded: ModuleNotFoundError" in detail
    assert "Are you sure that 'MixesBatchRow' is importable" in detail  # the reason Hydra's first line cut off
    assert detail.endswith("closest existing name: tests.test_check_model.MixesBatchRows")


def test_train_refuses_a_target_typo_with_one_line(broken_conf: str) -> None:
    from lra_bench import train as train_mod
    from lra_bench.errors import ConfigError
    from tests.conftest import compose_config

    cfg = compose_config(["model=target_typo", f"hydra.searchpath=[{broken_conf}]", "logger=none"], return_hydra_config=True)
    with pytest.raises(ConfigError, match=r"model target_typo: _target_ .*closest existing name: "
                                          r"tests.test_check_model.MixesBatchRows$"):
        train_mod.build(cfg)


def check(name: str, searchpath: str, only: tuple[str, ...] = CORRECTNESS) -> dict[str, tuple[str, str, str]]:
    results = run_checks(Target(model=name, quick=True, searchpath=(searchpath,)), only=only)
    return {r.name: (r.status, r.figure, r.detail) for r in results}


def failed(rows: dict[str, tuple[str, str, str]]) -> set[str]:
    return {name for name, (status, _, _) in rows.items() if status == FAIL}


def test_a_model_that_attends_to_padding_fails_the_padding_checks_only(broken_conf: str) -> None:
    rows = check("attends_to_padding", broken_conf)
    assert failed(rows) == {"pads: values at pads are ignored", "pads: extra padding is ignored", "pads: token ids, single",
                            "pads: pixels, single", "pads: token ids, pair (2B rows)"}
    status, figure, detail = rows["pads: extra padding is ignored"]
    assert figure.startswith("max |Δ| ") and detail.startswith("real positions with 20 more (noisy) pads: changed by ")


def test_a_model_that_mixes_batch_rows_fails_the_row_checks_only(broken_conf: str) -> None:
    rows = check("mixes_batch_rows", broken_conf)
    assert failed(rows) == {"rows: batch rows are independent (eval)", "rows: batch rows are independent (train)"}
    assert "information flows between rows" in rows["rows: batch rows are independent (eval)"][2]
    assert "no BatchNorm explains it" in rows["rows: batch rows are independent (train)"][2]


def test_a_model_with_an_unused_parameter_fails_the_gradient_check_naming_it(broken_conf: str) -> None:
    rows = check("unused_parameter", broken_conf)
    assert failed(rows) == {"gradients: every parameter, finite and non-zero"}
    status, figure, detail = rows["gradients: every parameter, finite and non-zero"]
    assert figure == "7/9 tensors" and detail == "no gradient (unused): backbone.unused.weight, backbone.unused.bias"


def test_a_tensor_made_in_forward_without_a_device_fails_the_device_row_naming_its_line(broken_conf: str) -> None:
    rows = check("makes_cpu_tensor", broken_conf, only=("device", "gradients"))
    assert failed(rows) == {"device: every tensor made on the input's device"}
    status, figure, detail = rows["device: every tensor made on the input's device"]
    line = next(i for i, text in enumerate(open(__file__), 1) if "# the device finding" in text)
    assert figure == "1 call(s) without device=" and detail == f"would land on the CPU: torch.ones at tests/test_check_model.py:{line}"
    status, figure, detail = rows["device: host syncs (stall a GPU)"]
    assert (status, figure) == (INFO, "1 sync(s)") and detail == f"item at tests/test_check_model.py:{line + 1}"


def test_a_module_that_breaks_the_protocol_stops_at_the_protocol_row(broken_conf: str) -> None:
    rows = check("not_a_backbone", broken_conf)
    assert list(rows) == ["protocol: forward(x, lengths) and hooks"]
    status, figure, detail = rows["protocol: forward(x, lengths) and hooks"]
    assert (status, figure) == (FAIL, "does not build") and "NotABackbone.forward must take (x: (B, L, D), lengths: (B,))" in detail


def test_moving_norms_and_biases_off_their_init_exposes_a_batchnorm_that_leaks_pads_in_eval_mode() -> None:
    torch.manual_seed(0)
    fresh = EvalBatchNormLeak(8).eval()
    assert all(r.status == PASS for r in backbone_padding(fresh, 8))  # at init the leak is invisible
    perturb_like_trained(fresh)
    rows = {r.name: r.status for r in backbone_padding(fresh, 8)}
    assert rows["pads: extra padding is ignored"] == FAIL and rows["pads: values at pads are ignored"] == PASS


def test_the_exponent_fit_reads_linear_and_quadratic_growth() -> None:
    assert exponent([(1024, 0.1), (2048, 0.2), (4096, 0.4)]) == pytest.approx(1.0)
    assert exponent([(1024, 1.0), (2048, 4.0), (4096, 16.0)]) == pytest.approx(2.0)
    assert exponent([(1024, 1.0)]) is None


def test_the_command_line_takes_tool_keys_flags_search_path_and_hydra_overrides() -> None:
    target, long, device, only = parse(["model=mine", "task=text", "--long", "quick=true", "model.net.backbone.n_layers=2",
                                        "hydra.searchpath=[file:///a,pkg://b.conf]", "only=pads,rows"])
    assert (target.model, target.task, target.quick, long, device, only) == ("mine", "text", True, True, "cpu", ("pads", "rows"))
    assert target.overrides == ("model.net.backbone.n_layers=2",) and target.searchpath == ("file:///a", "pkg://b.conf")
    with pytest.raises(SystemExit):
        parse(["task=text"])  # model= is required
    with pytest.raises(SystemExit):
        parse(["model=mine", "only=pads,speed"])


def test_an_unknown_model_exits_2_naming_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model=no_such_model"]) == 2
    assert "unknown model 'no_such_model'; valid models: bigbird," in capsys.readouterr().err


def test_the_command_prints_the_failing_row_and_exits_1(broken_conf: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "lra_bench.check_model", "model=mixes_batch_rows", "quick=true", "only=rows",
                           f"hydra.searchpath=[{broken_conf}]"], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "check_model: mixes_batch_rows on listops (quick)" in proc.stdout
    assert "2 failed: rows: batch rows are independent (eval) (rows 0 and 2 changed by" in proc.stdout


FAST = ("mega", "s4", "transformer")  # Mega; S4 (BatchNorm, _optim groups); the shared LRA Transformer block


def builtin(model: str):
    return pytest.param(model, marks=() if model in FAST else pytest.mark.slow)


@pytest.mark.parametrize("model", [builtin(m) for m in available("model")])
def test_every_builtin_model_passes_quick_mode(model: str) -> None:
    results = run_checks(Target(model=model, quick=True))
    failures = [f"{r.name}: {r.figure} ({r.detail})" for r in results if r.status == FAIL]
    assert not failures, failures
    by_name = {r.name: r for r in results}
    assert {"protocol: forward(x, lengths) and hooks", "pads: token ids, pair (2B rows)", "rows: batch rows are independent (eval)",
            "gradients: every parameter, finite and non-zero", "device: every tensor made on the input's device", "eval: deterministic", "bf16 autocast: finite",
            "cost: time of a training step", "budget: parameters vs Transformer / Mega",
            "trains: loss falls on a synthetic task"} <= set(by_name)
    if model in ("s4", "s4d", "s5", "lru"):  # BatchNorm: rows share batch statistics in train mode, as in S4's reference
        assert by_name["rows: batch rows are independent (train)"].status == INFO
