"""gpu_check: its CPU mode runs every section it can at tiny sizes through the real command, and every built-in
model trains a few optimizer steps under CPU bf16 autocast (every parameter moved, not only a finite loss)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lra_bench.checks.build import Target, build, inputs, model_config
from lra_bench.config import PROJECT_ROOT, available
from lra_bench.checks import PASS, SKIP
from lra_bench.gpu_check import QUICK, Row, main, summary


@pytest.mark.slow
def test_the_quick_cpu_run_passes_every_section_and_ends_with_one_json_line(tmp_path: Path) -> None:
    """The Transformer through step (fp32/bf16, SDPA kernel) and train (checkpoint, resume), the kernels row
    (skipped on CPU) and the bench's four models. DDP is left out here (two gloo processes: over a minute on 2 cores; tests/test_slow.py runs DDP on CPU)."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "lra_bench.gpu_check", "--device", "cpu", "--quick", "--models", "transformer",
           "--only", "step,train,kernels,bench", "--out", str(report)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["failed"] == [] and last["failed_checks"] == []
    assert set(last["passed"]) == {"transformer", "mega_chunk", "s4d", "s5", "transformer_fused"}
    assert last["device"].startswith("cpu")
    rows = {r["check"]: r for r in json.loads(report.read_text())["rows"]}
    for length in QUICK.lengths:
        step = rows[f"step: transformer @{length}"]
        assert step["status"] == "pass" and 0 <= step["values"]["rel_bf16_vs_fp32"] <= 0.1
    assert rows["sdpa: transformer"]["values"]["kernels"] == ["flash (cpu)"]  # attention dropout on: still fused on CPU
    listops = rows["train: transformer listops"]
    assert listops["status"] == "pass" and listops["figure"].startswith(f"resumed at {QUICK.resume_at}, step {QUICK.steps}")
    assert rows["train: transformer pathfinder"]["values"]["global_step"] == QUICK.steps
    assert rows["kernels: mamba_ssm selective scan, causal_conv1d"]["status"] == "skip"
    assert rows["bench: s4d @256"]["values"]["speed_vs_fused"] > 0


def test_cuda_without_a_gpu_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit) as exit_info:
        main(["--models", "mega"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--device=cuda: no CUDA device visible" in err and "--device cpu --quick" in err


def test_an_unknown_model_is_refused_naming_the_built_in_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--models", "mega,nope"])
    assert "--models: unknown nope; built-in models: bigbird," in capsys.readouterr().err


def test_an_empty_model_list_and_an_unwritable_report_are_refused_before_the_run(capsys: pytest.CaptureFixture[str],
                                                                                   tmp_path: Path) -> None:
    """Both used to start the run: ``--models ''`` checked no model and reported a pass; an unwritable ``--out``
    raised a traceback after the whole run, with no JSON last line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cpu", "--models", ""])
    assert exit_info.value.code == 2 and "--models='': no model named; give all (the default) or some of: bigbird," in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    for out, message in [(tmp_path / "file" / "r.json", "cannot create its folder"), (tmp_path, "cannot write a file there")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--device", "cpu", "--quick", "--out", str(out)])
        assert exit_info.value.code == 2 and f"--out={out}: {message}" in capsys.readouterr().err


def test_a_model_whose_every_row_was_skipped_is_not_listed_as_passed() -> None:
    """On a CPU the CUDA kernels' row is skipped: ``--only kernels`` ran nothing for mamba."""
    rows = [Row("kernels", "kernels: mamba_ssm", SKIP, "-", "CUDA-only kernels: not on a CPU", "mamba"),
            Row("step", "step: s4d @64", PASS, "1 tok/s", "", "s4d"), Row("ddp", "ddp: transformer", SKIP, "-", "", "transformer"),
            Row("step", "step: transformer @64", PASS, "1 tok/s", "", "transformer")]
    result = summary(rows, torch.device("cpu"), Path("r.json"))
    assert (result["passed"], result["failed"], result["skipped"]) == (["s4d", "transformer"], [], ["mamba"])


FAST = ("transformer",)


def bf16_training_problems(net: torch.nn.Module, cfg, steps: int = 3) -> list[str]:  # noqa: ANN001 - a DictConfig
    """``steps`` AdamW steps of ``net`` under CPU bf16 autocast (what ``trainer.precision=bf16-mixed`` runs:
    Lightning's bf16-mixed is ``torch.autocast(bfloat16)``): what went wrong, empty when it trained. A finite loss
    alone is not enough: a parameter cut off from the loss (no gradient) or left where it started did not train."""
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    lengths = [64, 50, 17, 3]
    x, labels = inputs(cfg, lengths, max(lengths), gen), torch.randint(0, int(cfg.task.num_classes), (len(lengths),), generator=gen)
    for step in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x, torch.tensor(lengths)).float(), labels)
        loss.backward()
        if not bool(torch.isfinite(loss)):
            return [f"step {step}: loss {float(loss)}"]
        grads = {n: p.grad for n, p in net.named_parameters()}
        problems = [f"step {step}: no gradient for {n}" for n, g in grads.items() if g is None]
        problems += [f"step {step}: non-finite gradient of {n}" for n, g in grads.items() if g is not None and not bool(torch.isfinite(g).all())]
        if problems:
            return problems
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [f"{n} unchanged after {steps} steps" for n, p in net.named_parameters() if torch.equal(p.detach(), start[n])]


@pytest.mark.parametrize("model", [pytest.param(m, marks=() if m in FAST else pytest.mark.slow) for m in available("model")])
def test_every_builtin_model_trains_a_few_steps_under_cpu_bf16_autocast(model: str) -> None:
    """Three AdamW steps of the quick one-layer model: loss and every gradient finite at each, every parameter
    reached by a gradient and moved."""
    cfg = model_config(Target(model=model, quick=True), "listops")
    assert bf16_training_problems(build(cfg), cfg) == []


def test_a_model_whose_backbone_gets_no_gradient_does_not_count_as_trained() -> None:
    """The backbone's output detached: the loss stays finite and the head trains, but the backbone and the
    embedding before it never do."""
    cfg = model_config(Target(model="transformer", quick=True), "listops")
    net = build(cfg)
    net.backbone.register_forward_hook(lambda module, args, out: out.detach())
    cut_off = [n for n, _ in net.named_parameters() if not n.startswith("head.")]
    assert cut_off and bf16_training_problems(net, cfg) == [f"step 0: no gradient for {n}" for n in cut_off]
