"""compile: the train entry point compiles the backbone in place (checkpoint keys unchanged), refuses a backbone
listed as not compilable in one line, and every built-in backbone goes through torch.compile on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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
