"""The spread of a cell's timed repeats, and what it allows a ratio of two cells to say.

A cell's speed is the median of its ``repeats`` training steps; its spread is their min-max range. Rules
(README §6):
- noisy: (max - min) / median > ``NOISY`` (the repeats disagree by more than a quarter of the median, as on a
  machine whose load changes during the cell); the figure is shown, flagged ``noisy``.
- order unclear: a ratio of two cells whose min-max ranges overlap does not say which is faster; it is shown,
  flagged ``?``. A cell compared with itself (the reference against the reference) is not flagged.
"""

from __future__ import annotations

NOISY = 0.25


def relative_spread(row: dict, prefix: str = "train") -> float | None:
    """(max - min) / median of the cell's timed steps, or None where the row has no range."""
    lo, hi, mid = row.get(f"{prefix}_min_s"), row.get(f"{prefix}_max_s"), row.get(f"{prefix}_s")
    if lo is None or hi is None or not mid:
        return None
    return (hi - lo) / mid


def is_noisy(row: dict) -> bool:
    spread = relative_spread(row)
    return spread is not None and spread > NOISY


def order_unclear(row: dict, reference: dict) -> bool:
    """True when the two cells' min-max step-time ranges overlap (and they are not the same cell)."""
    if row is reference or None in (row.get("train_min_s"), row.get("train_max_s"), reference.get("train_min_s"),
                                    reference.get("train_max_s")):
        return False
    return row["train_min_s"] <= reference["train_max_s"] and reference["train_min_s"] <= row["train_max_s"]


def tokens_range(row: dict) -> tuple[float, float]:
    """The cell's tokens/s at its slowest and fastest timed step."""
    per_step = row["tokens_per_s"] * row["train_s"]
    return per_step / row["train_max_s"], per_step / row["train_min_s"]
