"""``compile=true`` (torch.compile with inductor) measured for every built-in model on this machine.

    python -m lra_bench.checks.compile_all                                  # all built-in models, inductor
    python -m lra_bench.checks.compile_all --models s4,mamba --out r.json
    python -m lra_bench.checks.compile_all --backend aot_eager              # capture and autograd only, no codegen

Inductor generates and compiles C++ on a CPU: minutes per model on 2 cores, too slow for the test suite (which
holds every backbone to ``aot_eager`` in ``tests/test_compile.py``), so this is a command to rerun when torch or a
model changes. Per model, the quick one-layer ListOps model at length 64 (``lra_bench.checks.build``, as the tests
build it):

- eval mode, no grad: the backbone compiled by ``compile_backbone`` (what ``compile=true`` runs, refusals
  included), logits held to eager's within ``TOLERANCE`` (max |compiled - eager| / max |eager|: float32 both sides,
  the fused kernels reduce in another order);
- train mode (dropout on, a second graph): forward and backward, every gradient that exists finite.

Each model runs in a fresh process (``--worker``): Dynamo's caches start empty, and a crash or hang in one model
never takes the others (``--timeout`` seconds each, its process group killed). Each process gets its own empty
``TORCHINDUCTOR_CACHE_DIR`` in a temporary folder, so a warm cache from an earlier run cannot hide the compile time.

Per model: ``ok``, ``refused`` (listed in ``NOT_COMPILABLE``: the one-line reason ``compile=true`` prints),
``failed`` (the exception's first line) or ``timeout``; ``compile_s``, the wall time of the first compiled eval
forward plus the first compiled training step (compilation dominates: the steps themselves take milliseconds);
``wall_s`` and ``cpu_s``, the worker process's wall and CPU seconds, its C++ compilers included (on a shared
machine, niced, the wall time can be many times the CPU time: compare CPU seconds across runs); the graph breaks and graphs Dynamo counted; the relative difference. Prints a table, writes the JSON report
(``--out``: torch version, machine, load average), exits 1 when a model failed or timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

OK, REFUSED, FAILED, TIMEOUT = "ok", "refused", "failed", "timeout"
TOLERANCE = 1e-4  # max |compiled - eager| / max |eager| of the eval-mode logits
LENGTH = 64
LENGTHS = (64, 50, 17)  # one full row and two padded ones, as tests/test_compile.py
TIMEOUT_S = 600.0


def check_one(model: str, backend: str = "inductor") -> dict[str, Any]:
    """``model`` compiled with ``backend`` in this process (see the module docstring); never raises."""
    import torch.nn.functional as F
    from torch._dynamo.utils import counters

    from lra_bench.checks import one_line
    from lra_bench.checks.build import Target, build, inputs, model_config
    from lra_bench.errors import ConfigError
    from lra_bench.training.compile import compile_backbone

    torch._dynamo.reset()
    counters.clear()
    result: dict[str, Any] = {"model": model, "backend": backend}
    try:
        cfg = model_config(Target(model=model, quick=True), "listops", LENGTH)
        net = build(cfg).eval()  # no dropout: eager and compiled compute the same function
        lengths = torch.tensor(LENGTHS)
        x = inputs(cfg, LENGTHS, LENGTH, torch.Generator().manual_seed(0))
        with torch.no_grad():
            eager = net(x, lengths)
        try:
            compile_backbone(net.backbone, True if backend == "inductor" else backend)
        except ConfigError as e:  # listed in NOT_COMPILABLE: compile=true refuses it before training
            return {**result, "status": REFUSED, "reason": str(e)}
        started = time.perf_counter()
        with torch.no_grad():
            compiled = net(x, lengths)
        forward_s = time.perf_counter() - started
        net.train()
        started = time.perf_counter()
        F.cross_entropy(net(x, lengths).float(), torch.zeros(len(LENGTHS), dtype=torch.long)).backward()
        result["compile_s"] = round(forward_s + time.perf_counter() - started, 2)
    except Exception as e:  # noqa: BLE001 - any failure of the compiler is this model's result
        return {**result, "status": FAILED, "reason": one_line(e)}
    result["graph_breaks"] = sum(counters["graph_break"].values())
    result["graphs"] = counters["stats"]["unique_graphs"]
    result["rel_diff"] = float((compiled - eager).abs().max() / eager.abs().max().clamp_min(1e-30))
    bad = [n for n, p in net.backbone.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if not result["rel_diff"] <= TOLERANCE:
        return {**result, "status": FAILED, "reason": f"eval logits differ from eager: {result['rel_diff']:.2g} "
                                                      f"relative > {TOLERANCE:g}"}
    if bad or all(p.grad is None for p in net.backbone.parameters()):
        return {**result, "status": FAILED, "reason": f"gradients not finite or absent: {', '.join(bad[:3]) or 'none'}"}
    return {**result, "status": OK, "reason": ""}


def run_one(model: str, backend: str, timeout: float, cache_dir: Path) -> dict[str, Any]:
    """``check_one`` in a fresh process with ``cache_dir`` as its inductor cache; a timeout or a crash is recorded."""
    cmd = [sys.executable, "-m", "lra_bench.checks.compile_all", "--worker", model, "--backend", backend]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    # Its own session: inductor's compile workers are its children, and a timeout kills them all.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        out, err = "", None
    wall = {"wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(children_cpu_s() - cpu_before, 1)}
    if err is None:
        return {"model": model, "backend": backend, "status": TIMEOUT, "reason": f"over {timeout:g} s", **wall}
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        last = [line.strip() for line in err.splitlines() if line.strip()][-1:] or [""]
        return {"model": model, "backend": backend, "status": FAILED,
                "reason": f"process exited with status {proc.returncode}: {last[0][:200]}", **wall}
    return {**json.loads(lines[-1]), **wall}


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children and what they reaped (the C++ compilers of
    inductor's workers): on a shared machine the wall time says how long it took, this what compiling cost."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, Any]:
    """What the timings depend on: torch, the CPU, its threads and how loaded it was."""
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": [round(v, 1) for v in os.getloadavg()]}


def table(results: Sequence[dict[str, Any]]) -> str:
    head = (f"{'model':<20} {'status':<8} {'compile s':>9} {'CPU s':>7} {'breaks':>6} {'graphs':>6} {'rel diff':>9}"
            "  reason")
    rows = [head, "-" * len(head)]
    for r in results:
        diff = f"{r['rel_diff']:.1e}" if "rel_diff" in r else "-"
        rows.append(f"{r['model']:<20} {r['status']:<8} {r.get('compile_s', '-'):>9} {r.get('cpu_s', '-'):>7} "
                    f"{r.get('graph_breaks', '-'):>6} "
                    f"{r.get('graphs', '-'):>6} {diff:>9}  {r['reason']}")
    return "\n".join(rows)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    from lra_bench.config import builtin_models
    from lra_bench.errors import ConfigError

    ap = argparse.ArgumentParser(prog="python -m lra_bench.checks.compile_all", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help="comma-separated built-in models (default all)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor: compile=true)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per model (default {TIMEOUT_S:g})")
    ap.add_argument("--out", default="reports/compile_all.json", help="the JSON report")
    ap.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)  # one model in this process, JSON on stdout
    ns = ap.parse_args(list(argv))
    try:
        ns.models = builtin_models(ns.models)
    except ConfigError as e:
        ap.error(str(e))
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    if ns.worker:
        print(json.dumps(check_one(ns.worker, ns.backend)))
        return 0
    before = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="compile_all-") as caches:
        for model in ns.models:
            results.append(run_one(model, ns.backend, ns.timeout, Path(caches) / model))
            r = results[-1]
            print(f"{model}: {r['status']}, compile {r.get('compile_s', '-')} s, wall {r['wall_s']} s, "
                  f"CPU {r.get('cpu_s', '-')} s {r['reason']}".rstrip(), flush=True)
    report = {"backend": ns.backend, "tolerance": TOLERANCE, "length": LENGTH,
              "machine": {**before, "load_average_after": machine()["load_average"]}, "models": results}
    print(f"\ncompile_all, backend {ns.backend}, torch {before['torch']}, {before['cpu_count']} CPUs "
          f"(load average {before['load_average'][0]} at the start)\n{table(results)}")
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out}")
    return 1 if any(r["status"] in (FAILED, TIMEOUT) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
