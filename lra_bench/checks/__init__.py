"""The checks of ``python -m lra_bench.check_model``: one module per property a backbone must have for LRA numbers
to mean something (padding, batch rows, gradients, numerics, cost, budget, training). Each check returns
``CheckResult`` rows; ``lra_bench/check_model.py`` builds the models, runs them and prints the table."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, WARN, INFO, SKIP = "pass", "fail", "warn", "info", "skip"


@dataclass(frozen=True)
class CheckResult:
    """One row of the table: the check, its status (pass, fail, warn = worth a look but not wrong, info = measured
    only, skip), the measured figure and the threshold it is held against, a line saying what was measured or what
    went wrong, and for a failing row its likely cause."""

    name: str
    status: str
    figure: str
    detail: str = ""
    threshold: str = ""  # what the figure is held against, printed beside it ("" for a figure only read)
    cause: str = ""      # for a failing row: the usual reasons a backbone fails this check

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def fmt(value: float) -> str:
    """A measured difference or size, short: 0, 3.1e-07, 0.042, 12.5."""
    if value == 0:
        return "0"
    if value != value or abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.3g}"


def one_line(e: BaseException) -> str:
    """An exception as one line: the original error under Hydra's instantiation wrapper, first line, bounded; a
    ``_target_`` that cannot be loaded whole, with the closest existing name (``lra_bench.target_errors``)."""
    from lra_bench.target_errors import target_error

    unloadable = target_error(e)
    if unloadable is not None:
        return unloadable
    while type(e).__name__ == "InstantiationException" and e.__cause__ is not None:
        e = e.__cause__
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}"
