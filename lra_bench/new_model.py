"""Start your own model: ``python -m lra_bench.new_model NAME [--out DIR]`` writes an installable package NAME.

    DIR/pyproject.toml                   packaging, with the configs as package data
    DIR/NAME/backbone.py                 a backbone following lra_bench.models.protocol.Backbone (replace its layer)
    DIR/NAME/conf/__init__.py            makes the config folder a package: pkg://NAME.conf finds it
    DIR/NAME/conf/model/NAME.yaml        the model config (name = file name, d_model, dropout, net)
    DIR/tests/test_NAME.py               runs python -m lra_bench.check_model model=NAME quick=true as a test
    DIR/README.md                        the next commands

and prints the next commands: install it into lra_bench's environment, point LRA_BENCH_CONFIG_PATH at its configs,
check, train, sweep, bench, report. The files come from ``lra_bench/templates/new_model/`` (``__NAME__`` and
``__CLASS__`` replaced; ``.tmpl`` dropped, so the templates are never imported or collected as tests here).
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "templates" / "new_model"
NAME_RULE = re.compile(r"^[a-z][a-z0-9_]*$")


def class_name(name: str) -> str:
    """``bi_hyena`` -> ``BiHyena``."""
    return "".join(part.capitalize() for part in name.split("_") if part)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a new model package (one line), or None."""
    from importlib.util import find_spec

    from lra_bench.config import available

    if not NAME_RULE.match(name) or keyword.iskeyword(name):
        return (f"{name!r}: a model name is a lower-case Python identifier (letters, digits, _; it names the package, "
                "the config file and model=...), e.g. bi_hyena")
    if name in available("model"):
        return f"{name!r} is a built-in model (conf/model/{name}.yaml); pick another name"
    if find_spec(name) is not None:
        return f"{name!r} is already an importable module in this environment; pick another name"
    return None


def write_package(name: str, out: Path) -> list[Path]:
    """The package files under ``out`` (which must not exist or be empty); returns the paths written."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; give another --out (nothing was written)")
    written = []
    for template in sorted(p for p in TEMPLATE.rglob("*.tmpl") if p.is_file()):
        relative = str(template.relative_to(TEMPLATE)).removesuffix(".tmpl").replace("__NAME__", name)
        text = (template.read_text(encoding="utf-8").replace("__NAME__", name).replace("__CLASS__", class_name(name))
                .replace("__OUT__", str(out)))
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def next_commands(name: str, out: Path) -> str:
    steps = [
        (f".venv/bin/pip install -e {out}", f"editable: edits to {name}/backbone.py need no reinstall"),
        (f"export LRA_BENCH_CONFIG_PATH=pkg://{name}.conf", f"or, per command: hydra.searchpath=[pkg://{name}.conf]"),
        (f'make check-model MODEL={name} ARGS="quick=true"', "protocol, pads, rows, gradients, cost, budget, trains"),
        (f".venv/bin/python -m pytest {out}/tests", "the same check, as your package's test"),
        (f".venv/bin/python -m lra_bench.train experiment=quick model={name}", "the quick ListOps run"),
        (f".venv/bin/python -m lra_bench.train -m experiment=lra/mega-listops model={name} seed=1,2",
         "a 2-seed sweep at Mega's preset"),
        (f'make bench ARGS="models=[{name},transformer]"', "transformer in the grid gives the ratio columns"),
        ("make report", "reports/lra/: the LRA table, plots, HTML"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    lines = [f"  {command:<{width}}# {why}" for command, why in steps]
    return "next, from the lra_bench repository (its .venv is lra_bench's environment):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lra_bench.new_model", description=__doc__.splitlines()[0])
    ap.add_argument("name", help="the model's name: package, config file and model=<name> (lower-case identifier)")
    ap.add_argument("--out", default=None, help="the package folder to create (default: ./NAME)")
    args = ap.parse_args(argv)
    problem = name_problem(args.name)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out or args.name).expanduser().resolve()
    try:
        written = write_package(args.name, out)
    except (FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote the package {args.name} in {out}:")
    for path in written:
        print(f"  {path.relative_to(out)}")
    print(next_commands(args.name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
