"""Budget skipping for the benchmark grids: predict a cell from the same model's smaller lengths, skip what won't fit.

A figure y at length L is extrapolated from the model's last two measured lengths as y_last (L / L_last)^g, with
the growth exponent g measured between them (clamped to [1, 2.2]); with one measured length, g is the model's
nominal growth (2 for quadratic ones, else 1). Memory is predicted for the whole process, since that is what
must fit: the step's own memory (extrapolated as above) plus what the process held before the step, where the
parameters' share is known per length (counted on the meta device: Synthesizer's random logits are H L^2 per layer).
Before any length of a model is measured, nothing is predicted, but a cell whose parameters and their gradients
alone exceed the memory available now is not started (Synthesizer at 16K: 33 GB). A cell after a skipped one is
skipped too (it would be longer).
"""

from __future__ import annotations

import math
from typing import Any


def predict(history: list[dict[str, Any]], length: int, key: str, quadratic: bool) -> float | None:
    """Extrapolate ``key`` at ``length`` from the measured cells of ``history`` (measured growth exponent, 1..2.2)."""
    done = [h for h in history if key in h and h[key] > 0]
    if not done:
        return None
    last = done[-1]
    exponent = 2.0 if quadratic else 1.0
    if len(done) >= 2 and done[-2]["length"] != last["length"]:
        prev = done[-2]
        exponent = math.log(last[key] / prev[key]) / math.log(last["length"] / prev["length"])
        exponent = min(max(exponent, 1.0), 2.2)
    return last[key] * (length / last["length"]) ** exponent


def predict_process_mb(history: list[dict[str, Any]], length: int, quadratic: bool, params_mb: float | None) -> float | None:
    """The whole process's peak at ``length``: the step's memory extrapolated plus what is held before the step
    (``held_mb``: libraries, parameters, inputs), its parameter part resized; None before any measurement."""
    step = predict(history, length, "memory_mb", quadratic)
    if step is None:
        return None
    last = [h for h in history if "memory_mb" in h][-1]
    held = last.get("held_mb", 0.0)
    if params_mb is not None and last.get("params_mb") is not None:
        held += params_mb - last["params_mb"]
    return step + held


def skip_reason(history: list[dict[str, Any]], length: int, *, quadratic: bool, steps: float, cell_seconds: float,
                memory_mb: float, params_mb: float | None = None, available_mb: float | None = None
                ) -> tuple[str | None, dict[str, float]]:
    """(why this cell is skipped or None, the predictions: ``predicted_train_s`` (one step), ``predicted_memory_mb``
    (the step's own), ``predicted_process_mb``). ``steps``: steps per cell; ``memory_mb``: the budget for the
    process; ``params_mb``: the cell's parameters; ``available_mb``: memory free now."""
    t_pred = predict(history, length, "train_s", quadratic)
    m_pred = predict_process_mb(history, length, quadratic, params_mb)
    predicted = {"predicted_train_s": t_pred, "predicted_memory_mb": predict(history, length, "memory_mb", quadratic),
                 "predicted_process_mb": m_pred}
    if history and "skipped" in history[-1]:
        last = history[-1]
        reason = last["skipped"] if "skipped at L=" in last["skipped"] else f"skipped at L={last['length']}"
    elif t_pred is not None and t_pred * steps > cell_seconds:
        reason = f"predicted {t_pred * steps:.0f} s > budget {cell_seconds:g} s"
    elif m_pred is not None and m_pred > memory_mb:
        reason = f"predicted {m_pred:,.0f} MB > budget {memory_mb:,.0f} MB"
    elif m_pred is None and params_mb is not None and available_mb is not None and 2 * params_mb > available_mb:
        reason = f"parameters and their gradients {2 * params_mb:,.0f} MB > {available_mb:,.0f} MB available"
    else:
        reason = None
    return reason, {k: v for k, v in predicted.items() if v is not None}
