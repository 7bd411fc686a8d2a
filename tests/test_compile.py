"""compile: the train entry point compiles the backbone in place (checkpoint keys unchanged), refuses a backbone
listed as not compilable in one line, every built-in backbone goes through torch.compile on the CPU, and the
``compile_all`` command (inductor on every model) records ok, failed, refused and timeout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lra_bench.checks import compile_all
from lra_bench.checks.build import Target, build, inputs, model_config
from lra_bench.config import available
from lra_bench.errors import ConfigError
from lra_bench.train import build as build_run
from lra_bench.training import compile as compile_mod


def test_compile_true_compiles_the_backbone_in_place_and_keeps_checkpoint_keys(run_config) -> None:
    _, eager, _ = build_run(run_config())
    _, compiled, _ = build_run(run_config("compile=true"))
    assert compiled.net.backbone._compiled_call_impl is not None and eager.net.backbone._compiled_call_impl is None
    assert compiled.net.embedding._compiled_call_impl is None  # the embedding and head stay eager
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_a_backbone_listed_as_not_compilable_is_refused_in_one_line(run_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(compile_mod.NOT_COMPILABLE, "TransformerEncoder", "a reason measured on torch X")
    with pytest.raises(ConfigError) as e:
        build_run(run_config("compile=true"))
    assert str(e.value) == ("compile=True: TransformerEncoder is not compiled (a reason measured on torch X); "
                            "run without compile")


@pytest.mark.slow
@pytest.mark.parametrize("model", available("model"))
def test_every_builtin_backbone_compiles_on_the_cpu(model: str) -> None:
    """Dynamo capture and AOTAutograd (``aot_eager``: the graph traced and differentiated, no code generated, to
    keep this bounded), forward and backward of the quick one-layer model; outputs equal to eager within 1e-5."""
    torch._dynamo.reset()
    cfg = model_config(Target(model=model, quick=True), "listops", 64)
    net = build(cfg).eval()  # no dropout: eager and compiled compute the same function
    lengths = torch.tensor([64, 50, 17])
    x = inputs(cfg, lengths.tolist(), 64, torch.Generator().manual_seed(0))
    eager = net(x, lengths)
    compile_mod.compile_backbone(net.backbone, "aot_eager")
    compiled = net(x, lengths)
    F.cross_entropy(compiled.float(), torch.zeros(3, dtype=torch.long)).backward()
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5), float((compiled - eager).abs().max())
    assert all(torch.isfinite(p.grad).all() for p in net.backbone.parameters() if p.grad is not None)


def test_compile_all_worker_compiles_one_model_and_holds_it_to_eager() -> None:
    """The per-model worker of ``python -m lra_bench.checks.compile_all`` (inductor there; ``aot_eager`` here to stay
    within seconds), so the command cannot rot."""
    result = compile_all.check_one("s4d", "aot_eager")
    assert result["status"] == compile_all.OK, result["reason"]
    assert 0 <= result["rel_diff"] <= compile_all.TOLERANCE and result["compile_s"] > 0 and result["graphs"] >= 1


def test_compile_all_records_a_compiler_failure_in_one_line_and_a_refusal_with_its_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    failed = compile_all.check_one("s4d", "no_such_backend")
    assert failed["status"] == compile_all.FAILED and "no_such_backend" in failed["reason"]
    assert "\n" not in failed["reason"]
    monkeypatch.setitem(compile_mod.NOT_COMPILABLE, "S4Encoder", "a reason measured on torch X")
    refused = compile_all.check_one("s4d", "aot_eager")
    assert refused["status"] == compile_all.REFUSED
    assert refused["reason"] == ("compile=aot_eager: S4Encoder is not compiled (a reason measured on torch X); "
                                 "run without compile")


def test_compile_all_records_a_model_over_its_timeout(tmp_path) -> None:
    result = compile_all.run_one("s4d", "aot_eager", timeout=0.01, cache_dir=tmp_path)
    assert result["status"] == compile_all.TIMEOUT and result["reason"] == "over 0.01 s"
    assert result["wall_s"] >= 0 and result["cpu_s"] >= 0
