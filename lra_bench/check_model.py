"""Check a model against the backbone protocol: ``python -m lra_bench.check_model model=<name> [options]``.

    python -m lra_bench.check_model model=gated_conv                 # full: preset sizes, 1K/2K/4K, 300 steps
    python -m lra_bench.check_model model=mega task=text --long      # + 8K and 16K
    python -m lra_bench.check_model model=s4 quick=true              # one layer, 256..1K in-process, 60 steps
    make check-model MODEL=<name> [TASK=<task>] [ARGS="quick=true"]

Options (``key=value``): ``model`` (required; any name on the config search path, ``LRA_BENCH_CONFIG_PATH`` and
``hydra.searchpath=[...]`` included), ``task`` (default listops: whose config builds the model and whose presets set
the budget), ``quick`` (true: small and fast), ``long`` (or ``--long``: also 8K and 16K), ``device`` (cpu | cuda:
where the cost and bf16 checks run; default cpu), ``only`` (a comma-separated subset of the groups pads, rows,
gradients, device, numerics, cost, budget, trains).
Any other ``key=value`` is a Hydra override of the model's config (``model.net.backbone.n_layers=2``).

Prints a table, one row per check, with its status, the measured figure beside the threshold it is held against, and
for a failing row its likely cause; exits 1 when a check fails (2 on a bad command line). The checks (each module under ``lra_bench/checks/`` says exactly what it does):

- protocol: the backbone is an ``nn.Module`` with ``forward(x, lengths)`` and valid hooks (lra_bench/models/protocol.py);
- pads (eval mode, after moving biases, norm weights and running statistics away from their init): zero output at
  pads; real positions unchanged by the pads' values and by extra padding (backbone); logits unchanged by extra
  padding holding random values, for token and pixel input and the pair (2B rows) form;
- rows: one row's values and length do not reach the other rows (eval; train mode too unless a BatchNorm explains it);
- gradients: every parameter gets a finite, non-zero gradient;
- device: no tensor made in forward/backward (custom autograd backward passes included) without ``device=`` or
  with ``device="cpu"`` (it would land on the CPU); host syncs counted;
- eval determinism; bf16 autocast finite (forward and backward);
- cost: operations (FLOPs), CPU time and memory of a training step at 1K, 2K, 4K (8K, 16K with --long), with the
  fitted exponents (the operation count holds on a loaded machine; the time row says when its repeats are too noisy);
- budget: non-embedding parameters between the smaller of the task's Transformer and Mega presets / 4 and the larger x 4;
- trains: the held-out loss of a tiny synthetic task falls below 0.75x its start.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from omegaconf import DictConfig

from lra_bench.checks import FAIL, INFO, PASS, SKIP, WARN, CheckResult, one_line
from lra_bench.checks.budget import budget
from lra_bench.checks.build import TASK_OF_INPUT, Target, build, inputs, model_config, perturb_like_trained
from lra_bench.checks.device import device_placement
from lra_bench.checks.gradients import gradients
from lra_bench.checks.numerics import bf16_autocast, eval_determinism
from lra_bench.checks.padding import backbone_padding, classifier_padding, skipped
from lra_bench.checks.rows import batch_rows
from lra_bench.checks.scaling import LENGTHS, LONG_LENGTHS, QUICK_LENGTHS, scaling
from lra_bench.checks.trains import trains
from lra_bench.models.protocol import max_length, protocol_problem, supported_inputs

MakeInputs = Callable[[list[int], int, str], torch.Tensor]

STATUS_STYLE = {PASS: "green", FAIL: "bold red", WARN: "yellow", INFO: "cyan", SKIP: "dim"}
TOOL_KEYS = ("model", "task", "quick", "long", "device", "only")
GROUPS = ("pads", "rows", "gradients", "device", "numerics", "cost", "budget", "trains")  # the protocol row always runs


def _guard(name: str, fn: Callable[[], list[CheckResult] | CheckResult]) -> list[CheckResult]:
    """Run one check; an exception is a failed row naming it (a crash is what the check found)."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001
        return [CheckResult(name, FAIL, "error", one_line(e))]
    return out if isinstance(out, list) else [out]


def maker(task_cfg: DictConfig) -> MakeInputs:
    """``make(lengths, width, pad)``: a batch of ``task_cfg``'s input kind (``lra_bench.checks.build.inputs``)."""
    gen = torch.Generator().manual_seed(1)
    return lambda lengths, width, pad: inputs(task_cfg, lengths, width, gen, pad)


def on_device(make: MakeInputs, device: str) -> MakeInputs:
    return lambda lengths, width, pad: make(lengths, width, pad).to(device)


def run_checks(target: Target, long: bool = False, device: str = "cpu", only: Sequence[str] = GROUPS) -> list[CheckResult]:
    """The checks of the groups ``only`` (default all) on ``target``, in table order; the protocol row comes first
    (a model that does not build, or breaks the protocol, stops there)."""
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown check group(s) {unknown}; groups: {', '.join(GROUPS)}")
    protocol = "protocol: forward(x, lengths) and hooks"
    try:
        cfg = model_config(target, target.task)
        net = build(cfg)
    except Exception as e:  # noqa: BLE001 - a model that does not build is the first finding
        return [CheckResult(protocol, FAIL, "does not build", one_line(e))]
    if cfg.model.name != target.model:  # train would call it an unknown model: runs are keyed by the file's name
        return [CheckResult(protocol, FAIL, "name is not the file's",
                            f"model={target.model} (conf/model/{target.model}.yaml) declares name: {cfg.model.name}; "
                            f"set name: {target.model} (train, sweeps and the report know a model by its file name)")]
    backbone = net.backbone
    d_model = int(cfg.model.net.d_model)
    problem = protocol_problem(backbone)
    own = sum(1 for p in net.parameters() if getattr(p, "_optim", None))
    hooks = f"inputs {'+'.join(supported_inputs(backbone))}, max_length {max_length(backbone) or 'any'}"
    results = [CheckResult(protocol, FAIL if problem else PASS, hooks,
                           problem or f"{type(backbone).__name__}; {own} parameter tensors with their own optimizer settings (_optim)")]
    if problem:
        return results

    perturb_like_trained(net)
    net.eval()
    if "pads" in only:
        results += _guard("pads: backbone", lambda: backbone_padding(backbone, d_model))
    for (kind, pair), default_task in TASK_OF_INPUT.items() if "pads" in only else ():
        label = f"{'token ids' if kind == 'tokens' else 'pixels'}, {'pair (2B rows)' if pair else 'single'}"
        if kind not in supported_inputs(backbone):
            results.append(skipped(label, f"{type(backbone).__name__}.supported_inputs excludes {kind!r}"))
            continue
        task = target.task if (cfg.task.input, bool(cfg.task.pair)) == (kind, pair) else default_task

        def padding_check(task: str = task, label: str = label, pair: bool = pair) -> CheckResult:
            if task == target.task:
                return classifier_padding(net, maker(cfg), label, pair)
            task_cfg = model_config(target, task)
            task_net = build(task_cfg)
            perturb_like_trained(task_net)
            return classifier_padding(task_net.eval(), maker(task_cfg), label, pair)

        results += _guard(f"pads: {label}", padding_check)
    if "rows" in only:
        results += _guard("rows: batch rows are independent", lambda: batch_rows(backbone, d_model))
    pair = bool(cfg.task.pair)
    classes = int(cfg.task.num_classes)
    if "gradients" in only:
        results += _guard("gradients: every parameter, finite and non-zero", lambda: gradients(build(cfg), maker(cfg), classes, pair))
    if "device" in only:
        results += _guard("device: every tensor made on the input's device",
                          lambda: device_placement(build(cfg), maker(cfg), classes, pair))
    if "numerics" in only:
        results += _guard("eval: deterministic", lambda: eval_determinism(net, maker(cfg), pair))
        results += _guard("bf16 autocast: finite",
                          lambda: bf16_autocast(build(cfg).to(device), on_device(maker(cfg), device), classes, pair))
    lengths = QUICK_LENGTHS if target.quick else (*LENGTHS, *(LONG_LENGTHS if long else ()))
    if "cost" in only:
        results += _guard("cost: time and memory of a training step",
                          lambda: scaling(target, lengths, in_process=target.quick, device=device))
    if "budget" in only:
        results += _guard("budget: parameters vs Transformer / Mega", lambda: budget(target))

    def trains_check() -> CheckResult:
        two = model_config(replace(target, overrides=(*target.overrides, "task.num_classes=2")), target.task)
        return trains(build(two), two, target.quick)

    if "trains" in only:
        results += _guard("trains: loss falls on a synthetic task", trains_check)
    return results


def print_table(target: Target, results: Sequence[CheckResult], long: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    mode = "quick" if target.quick else "full" + (", long" if long else "")
    table = Table(title=f"check_model: {target.model} on {target.task} ({mode})", title_justify="left")
    for column in ("check", "status", "figure", "threshold", "what was measured"):
        table.add_column(column, overflow="fold")
    for r in results:
        detail = f"{r.detail}\n[bold]likely cause:[/] {r.cause}" if r.failed and r.cause else r.detail
        table.add_row(r.name, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", r.figure, r.threshold or "-", detail)
    console = Console(width=max(Console().width, 180))
    console.print(table)
    failed = [r for r in results if r.failed]
    counts = {status: sum(r.status == status for r in results) for status in (PASS, WARN, INFO, SKIP)}
    console.print(f"{len(failed)} failed: " + "; ".join(f"{r.name} ({r.detail})" for r in failed) if failed else
                  f"no check failed: {counts[PASS]} passed, {counts[WARN]} to look at, {counts[INFO]} measured only, "
                  f"{counts[SKIP]} skipped")


def parse(argv: Sequence[str]) -> tuple[Target, bool, str, tuple[str, ...]]:
    """(Target, long, device, groups) from the command line; ``SystemExit(2)`` on a bad one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    ap = argparse.ArgumentParser(prog="python -m lra_bench.check_model", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("args", nargs="*", help="model=<name> [task=listops] [quick=true] [long=true] [device=cpu] [only=pads,rows] "
                                            "[hydra.searchpath=[...]] [Hydra overrides of the model's config]")
    ap.add_argument("--long", action="store_true", help="also 8K and 16K")
    ap.add_argument("--quick", action="store_true", help="same as quick=true")
    ns = ap.parse_intermixed_args(list(argv))  # flags anywhere among the key=value arguments
    opts: dict[str, str] = {}
    overrides: list[str] = []
    searchpath: list[str] = []
    for arg in ns.args:
        key, sep, value = arg.partition("=")
        if not sep:
            ap.error(f"{arg!r}: arguments are key=value (model=<name>, task=<task>, or a Hydra override)")
        if key in TOOL_KEYS:
            opts[key] = value
        elif key == "hydra.searchpath":
            searchpath += [str(p) for p in OverridesParser.create().parse_override(arg).value()]
        else:
            overrides.append(arg)
    if not opts.get("model"):
        ap.error("model=<name> is required (make check-model MODEL=<name>)")
    truthy = ("1", "true", "yes", "on")
    target = Target(model=opts["model"], task=opts.get("task", "listops"), quick=ns.quick or opts.get("quick", "").lower() in truthy,
                    overrides=tuple(overrides), searchpath=tuple(searchpath))
    only = tuple(g.strip() for g in opts.get("only", ",".join(GROUPS)).split(",") if g.strip())
    if set(only) - set(GROUPS):
        ap.error(f"only={opts['only']}: groups are {', '.join(GROUPS)}")
    return target, ns.long or opts.get("long", "").lower() in truthy, opts.get("device", "cpu"), only


def measure_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process (``--cell``): one length of the cost check; an error comes back as data."""
    from lra_bench.checks.scaling import measure

    target = Target(**{**spec["target"], "overrides": tuple(spec["target"]["overrides"]),
                       "searchpath": tuple(spec["target"]["searchpath"])})
    try:
        return measure(target, spec["length"], spec["device"])
    except Exception as e:  # noqa: BLE001
        return {"error": one_line(e)}


DEVICE_CHOICES = "cpu, cuda or cuda:<index>"


def valid_device(device: str) -> bool:
    kind, _, index = device.partition(":")
    return device == "cpu" or (kind == "cuda" and (not index or index.isdigit()))


def argument_problem(target: Target, device: str) -> str | None:
    """Why the command line cannot be checked (an unknown model or task, a device torch has no name for, a model
    option out of its range), as one line; None when it can. Checked before anything is built, so a bad argument is
    never reported as the model failing a check."""
    from hydra.errors import HydraException

    from lra_bench.checks.build import compose, model_overrides
    from lra_bench.config import available, search_path_note
    from lra_bench.errors import ConfigError
    from lra_bench.models.options.check import check_model_options

    searchpath = list(target.searchpath)
    for group, name in (("model", target.model), ("task", target.task)):
        valid = available(group, searchpath)
        if name not in valid:
            where = search_path_note(searchpath).format(group=group)
            return f"unknown {group} {name!r}; valid {group}s: {', '.join(valid)} ({where})"
    if not valid_device(device):
        return f"device={device}: must be {DEVICE_CHOICES}"
    try:
        check_model_options(compose(model_overrides(target, target.task), target.searchpath))  # at the task's length
    except ConfigError as e:
        return str(e)
    except HydraException as e:  # an override of a key the config does not have, a bad value's syntax
        return " ".join(str(e).split())
    return None


def main(argv: Sequence[str] | None = None) -> int:
    from lra_bench.benchmarks.cells import serve_cell

    argv = list(sys.argv[1:] if argv is None else argv)
    if serve_cell(argv, measure_cell):
        return 0
    target, long, device, only = parse(argv)
    problem = argument_problem(target, device)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    results = run_checks(target, long=long, device=device, only=only)
    print_table(target, results, long)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
