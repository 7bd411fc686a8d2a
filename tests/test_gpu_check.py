"""gpu_check: its CPU mode runs every section it can at tiny sizes through the real command, and every built-in
model trains a few optimizer steps under CPU bf16 autocast."""

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
from lra_bench.gpu_check import QUICK, main


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


FAST = ("transformer",)


@pytest.mark.parametrize("model", [pytest.param(m, marks=() if m in FAST else pytest.mark.slow) for m in available("model")])
def test_every_builtin_model_trains_a_few_steps_under_cpu_bf16_autocast(model: str) -> None:
    """What ``trainer.precision=bf16-mixed`` runs (Lightning's bf16-mixed is ``torch.autocast(bfloat16)``): three
    AdamW steps of the quick one-layer model, loss and every gradient finite at each."""
    cfg = model_config(Target(model=model, quick=True), "listops")
    net = build(cfg).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    lengths = [64, 50, 17, 3]
    x, labels = inputs(cfg, lengths, max(lengths), gen), torch.randint(0, int(cfg.task.num_classes), (len(lengths),), generator=gen)
    for step in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x, torch.tensor(lengths)).float(), labels)
        loss.backward()
        bad = [n for n, p in net.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        assert bool(torch.isfinite(loss)) and not bad, (step, float(loss), bad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
