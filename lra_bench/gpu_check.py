"""The acceptance run for a GPU node, before anything long: ``python -m lra_bench.gpu_check`` (``make gpu-check``).

    python -m lra_bench.gpu_check                              # every built-in model, on cuda, about 5 minutes
    python -m lra_bench.gpu_check --models mega,s4d --out r.json
    python -m lra_bench.gpu_check --device cpu --quick         # the same checks at tiny sizes (make test-slow)

Offline (W&B off, data generated in a temporary folder), core dependencies only. Sections, one row each:

- ``step``: every model, forward + backward at 1K and 4K (quick: 64, 128) in fp32 and under bf16 autocast (what
  ``trainer.precision=bf16-mixed`` runs): logits and gradients finite, the eval-mode logits of bf16 within
  ``BF16_TOLERANCE`` of fp32 (max |Δ| / max(1, max |fp32|): bf16 keeps 8 bits of mantissa, and the error grows
  with depth), tokens/s of a training step in each precision and the CUDA allocator's peak (not measured on CPU);
- ``sdpa``: which kernel ``scaled_dot_product_attention`` dispatched to (flash, efficient, cudnn, math) for each
  model that calls it, in a bf16 training step;
- ``train``: every model, Lightning through ``lra_bench.train.train`` (what the command line runs) on generated
  quick ListOps (20 steps, a checkpoint, then a second run resumed from it to step 30) and quick Pathfinder (30
  steps), ``trainer=gpu trainer.precision=bf16-mixed`` (quick: a few steps on the CPU);
- ``kernels``: mamba_ssm's selective scan and causal_conv1d's conv against our PyTorch path, values and gradients
  (``KERNEL_TOLERANCE``), where installed and on CUDA;
- ``ddp``: 2 processes on 2 GPUs (quick on CPU: gloo) against 1 process with the whole batch, one model: the
  sampler shards one permutation by rank, so both see the same samples and the test loss agrees (``DDP_TOLERANCE``);
- ``bench``: tokens/s and peak memory of a training step of Mega-chunk, S4D, S5 and the fused-SDPA Transformer at
  1K/4K/16K (quick: 128/256), each cell in its own process (lra_bench/benchmarks/bench.py), and each model's speed
  and memory relative to the fused Transformer at the same length, in this run.

Prints the table (check, status, figure, what), writes the JSON report (``--out``), exits 1 when a row failed, and
its last line is one JSON object: ``passed`` and ``failed`` (model names), ``skipped`` (models whose every row was
skipped), ``failed_checks``, ``device``, ``report``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lra_bench.checks import FAIL, INFO, PASS, SKIP, fmt, one_line

BF16_TOLERANCE = 0.1
KERNEL_TOLERANCE = {"values": 1e-4, "gradients": 1e-3}  # float32 both sides, reductions in another order
DDP_TOLERANCE = 1e-3  # relative, test loss: float reductions in another order (and GPU kernels' own nondeterminism)
BENCH_MODELS = ("mega_chunk", "s4d", "s5", "transformer_fused")
BENCH_REFERENCE = "transformer_fused"
DDP_MODEL = "transformer"


@dataclass(frozen=True)
class Sizes:
    """What a run measures: full on a GPU node, quick (tiny) anywhere."""

    lengths: tuple[int, ...]
    batch: int
    repeats: int
    steps: int  # training steps; the resumed ListOps run stops at ``steps`` after a first run to ``resume_at``
    resume_at: int
    bench_lengths: tuple[int, ...]
    listops_rows: int
    pathfinder_images: int


FULL = Sizes(lengths=(1024, 4096), batch=2, repeats=3, steps=30, resume_at=20, bench_lengths=(1024, 4096, 16384),
             listops_rows=2000, pathfinder_images=1000)
QUICK = Sizes(lengths=(64, 128), batch=2, repeats=1, steps=4, resume_at=2, bench_lengths=(128, 256), listops_rows=160,
              pathfinder_images=120)


@dataclass
class Row:
    section: str
    check: str
    status: str
    figure: str
    detail: str = ""
    model: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


def guarded(section: str, check: str, model: str | None, fn: Callable[[], list[Row]]) -> list[Row]:
    """A check that raises is a failed row naming the error (a crash is what the acceptance run is for)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return [Row(section, check, FAIL, "error", one_line(e), model)]


# --- step: forward + backward per model, fp32 and bf16 -------------------------------------------

def model_net(model: str, length: int, quick: bool) -> tuple[torch.nn.Module, Any]:
    """The classifier of ``model`` at ``length``: its Text preset (the bench's setting), or in quick mode its own
    small config with one layer (check_model's quick build)."""
    from lra_bench.benchmarks.model_configs import build_net, length_overrides, resolve
    from lra_bench.checks.build import Target, build, model_config

    if quick:
        cfg = model_config(Target(model=model, quick=True), "listops", length)
        return build(cfg), cfg.task
    resolved, composed = resolve(model, "text")
    torch.manual_seed(0)
    return build_net([*resolved.overrides, *length_overrides(composed, length)])


def batch_for(task: Any, batch: int, length: int, device: torch.device) -> list[torch.Tensor]:
    """Random inputs of the task's kind; the second row half as long (the masks are exercised)."""
    gen = torch.Generator().manual_seed(0)
    high = int(task.vocab_size) if task.input == "tokens" else 256
    lengths = torch.tensor([length] + [max(1, length // 2)] * (batch - 1))
    x = torch.randint(1, high, (batch, length), generator=gen) * (torch.arange(length)[None] < lengths[:, None])
    args = [x, lengths]
    if task.pair:
        args += [x.flip(0), lengths.flip(0)]
    return [a.to(device) for a in args]


class SdpaKernels(torch.utils._python_dispatch.TorchDispatchMode):
    """The aten kernels ``scaled_dot_product_attention`` dispatched to, by name (below autograd: the chosen one)."""

    NAMES = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
             "_scaled_dot_product_efficient_attention": "efficient", "_scaled_dot_product_cudnn_attention": "cudnn",
             "_flash_attention_forward": "flash", "_efficient_attention_forward": "efficient",
             "_scaled_dot_product_attention_math": "math", "_scaled_dot_product_fused_attention_overrideable": "fused"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the torch protocol
        name = func.overloadpacket.__name__
        if name in self.NAMES:
            self.seen.add(self.NAMES[name])
        return func(*args, **(kwargs or {}))


class SdpaCalls(torch.overrides.TorchFunctionMode):
    """Counts ``scaled_dot_product_attention`` calls, however the model imported it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the torch protocol
        self.calls += getattr(func, "__name__", "") == "scaled_dot_product_attention"
        return func(*args, **(kwargs or {}))


def uses_sdpa(net: torch.nn.Module, args: list[torch.Tensor]) -> set[str] | None:
    """The SDPA kernels of one bf16 training-mode forward (autograd on), or None when the model never calls SDPA. The math path decomposes
    above the dispatcher, so a call with no fused kernel seen is the math one."""
    with torch.autocast(args[0].device.type, dtype=torch.bfloat16), SdpaCalls() as calls, SdpaKernels() as kernels:
        net(*args)
    if not calls.calls:
        return None
    return kernels.seen or {"math"}


def step_rows(model: str, length: int, device: torch.device, sizes: Sizes, quick: bool) -> list[Row]:
    from lra_bench.benchmarks.cells import time_step

    net, task = model_net(model, length, quick)
    net = net.to(device)
    args = batch_for(task, sizes.batch, length, device)
    labels = torch.zeros(sizes.batch, dtype=torch.long, device=device)
    net.eval()
    with torch.no_grad():
        ref = net(*args).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = net(*args).float()
    rel = float((low - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    net.train()
    figures: dict[str, Any] = {"length": length, "rel_bf16_vs_fp32": rel}
    bad: list[str] = []
    if not bool(torch.isfinite(ref).all()) or not bool(torch.isfinite(low).all()):
        bad.append("non-finite logits")
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        nonfinite: list[str] = []

        def step() -> None:
            with autocast:
                loss = F.cross_entropy(net(*args).float(), labels)
            loss.backward()
            nonfinite.extend(n for n, p in net.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all()))
            net.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        timed = time_step(step, 1, sizes.repeats, device)
        docs = 2 if task.pair else 1
        figures[f"tokens_per_s_{precision}"] = sizes.batch * length * docs / timed["median_s"]
        figures[f"peak_mb_{precision}"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        if nonfinite:
            bad.append(f"non-finite {precision} gradients: {', '.join(sorted(set(nonfinite))[:3])}")
    if rel > BF16_TOLERANCE:
        bad.append(f"bf16 logits differ from fp32 by {fmt(rel)} > {BF16_TOLERANCE}")
    memory = (f", peak {figures['peak_mb_fp32']:,.0f}/{figures['peak_mb_bf16']:,.0f} MB" if device.type == "cuda" else "")
    figure = (f"{figures['tokens_per_s_fp32']:,.0f}/{figures['tokens_per_s_bf16']:,.0f} tok/s{memory}, "
              f"rel. Δ {fmt(rel)}")
    rows = [Row("step", f"step: {model} @{length}", FAIL if bad else PASS, figure,
                "; ".join(bad) or "fwd+bwd fp32/bf16 finite; tokens/s fp32/bf16 (peak MB fp32/bf16); bf16 vs fp32 logits",
                model, figures)]
    if length == sizes.lengths[0]:
        kernels = uses_sdpa(net.train(), args)
        if kernels is not None:
            rows.append(Row("sdpa", f"sdpa: {model}", INFO, ", ".join(sorted(kernels)),
                            "the kernel scaled_dot_product_attention picked (bf16 training step)", model,
                            {"kernels": sorted(kernels)}))
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# --- train: the real entry point, generated data, checkpoint and resume ------------------------------

def generate_data(root: Path, sizes: Sizes) -> None:
    """Quick ListOps (the ``make data-quick`` spec, fewer rows) and easy pathfinder32 images (``curv_baseline``)."""
    from data_prep import pathfinder
    from data_prep.listops import ListOpsSpec, generate

    n = sizes.listops_rows
    generate(root / "listops-quick", {"train": n, "val": max(n // 10, 32), "test": max(n // 10, 32)}, seed=0,
             spec=ListOpsSpec(min_length=20, max_length=120, max_depth=5, max_args=5), progress=False)
    pathfinder.generate(root, 32, "curv_baseline", sizes.pathfinder_images, seed=0, progress=False)


def train_overrides(model: str, task: str, device: torch.device, data: Path, out: Path, steps: int, quick: bool) -> list[str]:
    experiment = "quick" if task == "listops" else "quick_pathfinder"
    trainer = ["trainer=gpu", "trainer.precision=bf16-mixed"] if device.type == "cuda" else ["trainer=cpu", "trainer.precision=bf16-mixed"]
    small = ["task.batch_size=16"] if quick else []
    return [f"experiment={experiment}", f"model={model}", *trainer, "logger=csv", "~callbacks.progress_bar",
            f"paths.data_dir={data}", f"paths.output_dir={out}", f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
            "trainer.max_time=null", "checkpoint_every_n_steps=5", "task.datamodule.num_workers=0", "trainer.log_every_n_steps=1",
            *small]


def compose(overrides: Sequence[str], quick: bool):
    """The training config as ``python -m lra_bench.train`` composes it (quick: one layer, as check_model's)."""
    from hydra import compose as hydra_compose

    from lra_bench.benchmarks.model_configs import _own_hydra
    from lra_bench.checks.build import quick_overrides

    with _own_hydra():
        cfg = hydra_compose("train", overrides=list(overrides))
        return hydra_compose("train", overrides=[*overrides, *quick_overrides(cfg)]) if quick else cfg


def train_rows(model: str, device: torch.device, data: Path, work: Path, sizes: Sizes, quick: bool) -> list[Row]:
    from lra_bench.train import train

    rows = []
    for task in ("listops", "pathfinder"):
        out = work / model / task
        started = time.perf_counter()
        if task == "listops":  # to resume_at, then a second run from its last checkpoint to steps
            first = train(compose(train_overrides(model, task, device, data, out / "first", sizes.resume_at, quick), quick))
            ckpt = out / "first" / "checkpoints" / "last.ckpt"
            if not ckpt.is_file():
                rows.append(Row("train", f"train: {model} {task}", FAIL, "no checkpoint", f"{ckpt} was not written", model))
                continue
            result = train(compose([*train_overrides(model, task, device, data, out / "resumed", sizes.steps, quick),
                                    f"ckpt_path={ckpt}"], quick))
            resumed = f"resumed at {first['global_step']}, "
        else:
            result = train(compose(train_overrides(model, task, device, data, out, sizes.steps, quick), quick))
            resumed = ""
        loss, step = float(result["test/loss"]), int(result["global_step"])
        ok = math.isfinite(loss) and step == sizes.steps and (task != "listops" or first["global_step"] == sizes.resume_at)
        rows.append(Row("train", f"train: {model} {task}", PASS if ok else FAIL,
                        f"{resumed}step {step}, test loss {fmt(loss)}, {time.perf_counter() - started:.0f} s",
                        "bf16-mixed Lightning run, checkpoint and resume" if task == "listops" else "bf16-mixed Lightning run",
                        model, {"test_loss": loss, "global_step": step}))
    return rows


# --- kernels: mamba_ssm / causal_conv1d against our PyTorch path --------------------------------------

def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


def kernel_rows(device: torch.device) -> list[Row]:
    from lra_bench.models.ssm.mamba import _causal_conv1d_cuda
    from lra_bench.models.ssm.selective_scan import cuda_selective_scan, selective_scan

    if device.type != "cuda":
        return [Row("kernels", "kernels: mamba_ssm selective scan, causal_conv1d", SKIP, "-", "CUDA-only kernels: not on a CPU", "mamba")]
    if cuda_selective_scan() is None:
        return [Row("kernels", "kernels: mamba_ssm selective scan", SKIP, "-", "mamba_ssm not installed: our PyTorch scan runs", "mamba")]
    gen = torch.Generator().manual_seed(0)
    Bt, L, E, N = 2, 300, 64, 16
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    A = -torch.rand(E, N, generator=gen) * 4.0 - 0.1
    args = [a.to(device).requires_grad_() for a in (r(Bt, L, E), r(Bt, L, E), A, r(Bt, L, N), r(Bt, L, N), r(E), r(Bt, L, E), r(E))]
    u, delta, A, B, C, D, z, bias = args
    outs = [selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, use_kernel=k) for k in (True, False)]
    dy = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(o, args, dy) for o in outs]
    values = rel_err(outs[0], outs[1])
    gradients = max(rel_err(a, b) for a, b in zip(*grads))
    ok = values <= KERNEL_TOLERANCE["values"] and gradients <= KERNEL_TOLERANCE["gradients"]
    rows = [Row("kernels", "kernels: mamba_ssm selective scan", PASS if ok else FAIL, f"rel. err {fmt(values)} / grads {fmt(gradients)}",
                f"selective_scan_fn vs our chunked scan (tolerance {KERNEL_TOLERANCE['values']:g} / {KERNEL_TOLERANCE['gradients']:g})",
                "mamba", {"values": values, "gradients": gradients})]
    conv = torch.nn.Conv1d(E, E, 4, groups=E, padding=3).to(device)
    x = torch.randn(Bt, E, L, device=device, requires_grad=True)
    fused = _causal_conv1d_cuda(x, conv)
    if fused is None:
        rows.append(Row("kernels", "kernels: causal_conv1d", SKIP, "-", "causal_conv1d not installed: nn.Conv1d runs", "mamba"))
        return rows
    plain = F.silu(conv(x)[..., :L])
    dy = torch.randn_like(plain)
    g_fused, g_plain = torch.autograd.grad(fused, [x, conv.weight], dy), torch.autograd.grad(plain, [x, conv.weight], dy)
    values, gradients = rel_err(fused, plain), max(rel_err(a, b) for a, b in zip(g_fused, g_plain))
    ok = values <= KERNEL_TOLERANCE["values"] and gradients <= KERNEL_TOLERANCE["gradients"]
    rows.append(Row("kernels", "kernels: causal_conv1d", PASS if ok else FAIL, f"rel. err {fmt(values)} / grads {fmt(gradients)}",
                    "causal_conv1d_fn + SiLU vs nn.Conv1d + SiLU", "mamba", {"values": values, "gradients": gradients}))
    return rows


# --- ddp: 2 processes against 1, the sharding check ------------------------------------------------------

def ddp_rows(device: torch.device, data: Path, work: Path, sizes: Sizes, quick: bool) -> list[Row]:
    """One process with batch 16 against 2 with batch 8 each (fp32, no dropout): the same samples per step, the
    averaged gradients, so the same test loss. ``ddp_spawn``: plain ``ddp`` would relaunch this whole command."""
    from lra_bench.train import train

    check = f"ddp: {DDP_MODEL}, 2 processes vs 1"
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return [Row("ddp", check, SKIP, "-", f"{torch.cuda.device_count()} GPU visible: needs 2", DDP_MODEL)]
    common = [*train_overrides(DDP_MODEL, "listops", device, data, work, sizes.steps, quick), "trainer.precision=32-true",
              "model.net.backbone.dropout=0.0", "checkpoint_every_n_steps=1000"]
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    single = train(compose([*common, f"paths.output_dir={work / 'one'}", "task.batch_size=16"], quick))
    ddp = train(compose([*common, f"paths.output_dir={work / 'two'}", "task.batch_size=8", "trainer=ddp",
                         f"trainer.accelerator={accelerator}", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                         "trainer.sync_batchnorm=false", "trainer.precision=32-true"], quick))
    from lra_bench.training.run_state import checkpoint_step

    a, b = float(single["test/loss"]), float(ddp["test/loss"])
    rel = abs(a - b) / max(abs(a), 1e-12)
    # under ddp_spawn the loop runs in the children: their best checkpoint holds the step count
    steps = checkpoint_step(Path(single["best_checkpoint"])), checkpoint_step(Path(ddp["best_checkpoint"]))
    ok = math.isfinite(rel) and rel <= DDP_TOLERANCE and steps[0] == steps[1]
    return [Row("ddp", check, PASS if ok else FAIL, f"test loss {fmt(a)} vs {fmt(b)} (rel. {fmt(rel)}), steps {steps[0]}/{steps[1]}",
                f"2 x batch 8 = 1 x batch 16 within {DDP_TOLERANCE:g}: the sampler shards one permutation by rank",
                DDP_MODEL, {"single": a, "ddp": b})]


# --- bench: the same-run speed and memory ratios -------------------------------------------------------

def bench_rows(device: torch.device, sizes: Sizes, quick: bool) -> list[Row]:
    """Each cell by lra_bench/benchmarks/bench.py's ``measure_cell`` (its own process on a GPU node; in-process when
    quick), ratios against the fused Transformer at the same length."""
    from lra_bench.benchmarks.bench import measure_cell
    from lra_bench.benchmarks.cells import run_cell
    from lra_bench.benchmarks.model_configs import length_overrides, resolve

    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for model in BENCH_MODELS:
        resolved, composed = resolve(model, "text")
        extra = ["model.net.backbone.n_layers=1"] if quick and "n_layers" in composed.model.net.backbone else []
        for length in sizes.bench_lengths:
            spec = {"model": model, "overrides": [*resolved.overrides, *length_overrides(composed, length), *extra],
                    "searchpath": [], "length": length, "batch": sizes.batch, "device": device.type,
                    "precision": "bf16" if device.type == "cuda" else "fp32", "warmup": 1, "repeats": sizes.repeats,
                    "inference": False, "flops": False}
            try:
                cells[model, length] = measure_cell(spec) if quick else run_cell("lra_bench.benchmarks.bench", spec, 300)
            except Exception as e:  # noqa: BLE001
                cells[model, length] = {"skipped": one_line(e)}
    rows = []
    for (model, length), cell in cells.items():
        ref = cells.get((BENCH_REFERENCE, length), {})
        check = f"bench: {model} @{length}"
        if "skipped" in cell:
            rows.append(Row("bench", check, FAIL, "not measured", cell["skipped"], model))
            continue
        speed = cell["tokens_per_s"] / ref["tokens_per_s"] if "tokens_per_s" in ref else None
        own_memory = device.type == "cuda" or not quick  # a CPU cell in this process: its RSS peak is not its own
        memory = cell["memory_mb"] / ref["memory_mb"] if own_memory and ref.get("memory_mb") else None
        figure = f"{cell['tokens_per_s']:,.0f} tok/s" + (f", {cell['memory_mb']:,.0f} MB" if own_memory else "")
        if model != BENCH_REFERENCE:
            figure += f"; {fmt(speed) if speed else '-'}x speed, {fmt(memory) if memory else '-'}x memory"
        rows.append(Row("bench", check, INFO, figure, f"training step, batch {sizes.batch}; ratios vs {BENCH_REFERENCE} (this run)",
                        model, {"tokens_per_s": cell["tokens_per_s"], "memory_mb": cell["memory_mb"] if own_memory else None,
                                "speed_vs_fused": speed,
                                "memory_vs_fused": memory}))
    return rows


# --- the run ---------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"


def run(models: Sequence[str], device: torch.device, quick: bool, sections: Sequence[str], work: Path) -> list[Row]:
    sizes = QUICK if quick else FULL
    rows: list[Row] = []
    if "step" in sections:
        for model in models:
            for length in sizes.lengths:
                rows += guarded("step", f"step: {model} @{length}", model, lambda m=model, n=length: step_rows(m, n, device, sizes, quick))
    data = work / "data"
    if {"train", "ddp"} & set(sections):
        generate_data(data, sizes)
    if "train" in sections:
        for model in models:
            rows += guarded("train", f"train: {model}", model, lambda m=model: train_rows(m, device, data, work / "train", sizes, quick))
    if "kernels" in sections:  # the rows name mamba only when it is among the models checked
        owner = "mamba" if "mamba" in models else None
        rows += [replace(r, model=owner) for r in guarded("kernels", "kernels: mamba_ssm", owner, lambda: kernel_rows(device))]
    if "ddp" in sections:
        rows += guarded("ddp", f"ddp: {DDP_MODEL}", DDP_MODEL, lambda: ddp_rows(device, data, work / "ddp", sizes, quick))
    if "bench" in sections:
        rows += guarded("bench", "bench", None, lambda: bench_rows(device, sizes, quick))
    return rows


def summary(rows: Sequence[Row], device: torch.device, report: Path) -> dict[str, Any]:
    """A model passes when none of its rows failed and at least one ran: one whose every row was skipped (the CUDA
    kernels on a CPU, DDP on one GPU) is listed as skipped, not as passed."""
    models = list(dict.fromkeys(r.model for r in rows if r.model))
    failed = [m for m in models if any(r.model == m and r.status == FAIL for r in rows)]
    skipped = [m for m in models if all(r.status == SKIP for r in rows if r.model == m)]
    return {"passed": [m for m in models if m not in failed and m not in skipped], "failed": failed, "skipped": skipped,
            "failed_checks": [r.check for r in rows if r.status == FAIL], "device": device_name(device), "report": str(report)}


def print_table(rows: Sequence[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    style = {PASS: "green", FAIL: "bold red", INFO: "cyan", SKIP: "dim"}
    table = Table(title=title, title_justify="left")
    for column in ("check", "status", "figure", "what"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.check, f"[{style.get(r.status, '')}]{r.status}[/]", r.figure, r.detail)
    Console(width=max(Console().width, 160)).print(table)


SECTIONS = ("step", "train", "kernels", "ddp", "bench")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    from lra_bench.config import builtin_models
    from lra_bench.errors import ConfigError

    ap = argparse.ArgumentParser(prog="python -m lra_bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the same checks in a minute or two on a CPU")
    ap.add_argument("--models", default="all", help="comma-separated built-in models (default all)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--out", default="reports/gpu_check.json", help="the JSON report")
    ns = ap.parse_args(list(argv))
    try:
        ns.models = builtin_models(ns.models)
    except ConfigError as e:
        ap.error(str(e))
    ns.only = [s.strip() for s in ns.only.split(",") if s.strip()]
    if set(ns.only) - set(SECTIONS):
        ap.error(f"--only={','.join(ns.only)}: sections are {', '.join(SECTIONS)}")
    if ns.device.split(":")[0] not in ("cuda", "cpu"):
        ap.error(f"--device={ns.device}: cuda or cpu")
    if ns.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device={ns.device}: no CUDA device visible (torch {torch.__version__}, built for CUDA "
                 f"{torch.version.cuda}); run on a GPU node, or --device cpu --quick")
    out = Path(ns.out).resolve()
    try:  # checked before the run: the report is written after it, minutes later
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out={ns.out}: cannot create its folder ({e.strerror}); give a writable path")
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        ap.error(f"--out={ns.out}: cannot write a file there; give a writable file path")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    from lra_bench.train import quiet_library_noise

    ns = parse(sys.argv[1:] if argv is None else argv)
    os.environ["WANDB_MODE"] = "disabled"  # offline node: nothing reaches W&B, and the runs log to CSV anyway
    quiet_library_noise()
    device = torch.device(ns.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:
        rows = run(ns.models, device, ns.quick, ns.only, Path(work))
    report = Path(ns.out)
    result = summary(rows, device, report)
    mode = "quick" if ns.quick else "full"
    print_table(rows, f"gpu_check on {result['device']} ({mode}, {time.perf_counter() - started:.0f} s)")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({**result, "mode": mode, "tolerances": {"bf16": BF16_TOLERANCE, "kernels": KERNEL_TOLERANCE,
                                                                          "ddp": DDP_TOLERANCE},
                                  "rows": [asdict(r) for r in rows]}, indent=2, default=str))
    print(json.dumps(result))
    return 1 if result["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
