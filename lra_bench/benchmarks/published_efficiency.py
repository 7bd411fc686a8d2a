"""Published speed and memory of the LRA models, beside which ``make bench`` prints its own ratios.

Two sources, both measured on Text (byte-level IMDb) in training:

- The LRA paper's efficiency table (Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers",
  ICLR 2021, arXiv 2011.04006, Section 3.4 "Efficiency benchmarks": "Benchmark results of all X-former models with
  a consistent batch size of 32 across all models"; numbered Table 2 in the arXiv text, Table 3 in some copies).
  Steps per second and peak memory per TPU device (GB) at 1K, 2K, 3K and 4K tokens, batch 32, 4x4 TPU v3, the
  JAX/Flax models of google-research/long-range-arena. The relative speed is the paper's own bracket (steps/s over
  the Transformer's); the paper prints no relative memory: ``memory_x`` divides by the Transformer's memory.
  The table has no Sparse Transformer or Longformer row.
- The Mega paper (Ma et al., "Mega: Moving Average Equipped Gated Attention", ICLR 2023, arXiv 2209.10655) Table 2:
  speed and memory at 4K relative to the Mega authors' Transformer (A100), for the models it lists.

A ratio printed beside these is a measurement of this harness on this machine; the published ones come from other
hardware and implementations, so only the shape (which models grow linearly, who is faster at 4K) compares.
"""

from __future__ import annotations

from dataclasses import dataclass

LRA_EFFICIENCY = ("LRA paper (Tay et al., ICLR 2021, arXiv 2011.04006) Section 3.4 efficiency table: Text, batch 32, "
                  "4x4 TPU v3")
MEGA_TABLE_2 = "Mega paper (Ma et al., ICLR 2023) Table 2: Text at 4K, vs the Mega authors' Transformer, A100"
LRA_KS = (1, 2, 3, 4)  # the table's lengths, 1K..4K tokens


@dataclass(frozen=True)
class EfficiencyRow:
    """One model's row of the LRA efficiency table, at 1K, 2K, 3K, 4K tokens."""

    name: str
    model: str  # the harness model it stands beside
    steps_per_s: tuple[float, float, float, float]
    memory_gb: tuple[float, float, float, float]
    speed_x: tuple[float, float, float, float]  # the printed brackets (1.0 for the Transformer)
    note: str = ""


LRA_TABLE: tuple[EfficiencyRow, ...] = (
    EfficiencyRow("Transformer", "transformer", (8.1, 4.9, 2.3, 1.4), (0.85, 2.65, 5.51, 9.48), (1.0, 1.0, 1.0, 1.0)),
    EfficiencyRow("Local Attention", "local", (9.2, 8.4, 7.4, 7.4), (0.42, 0.76, 1.06, 1.37), (1.1, 1.7, 3.2, 5.3)),
    EfficiencyRow("Linformer", "linformer", (9.3, 9.1, 8.5, 7.7), (0.37, 0.55, 0.99, 0.99), (1.2, 1.9, 3.7, 5.5)),
    EfficiencyRow("Reformer", "reformer", (4.4, 2.2, 1.5, 1.1), (0.48, 0.99, 1.53, 2.28), (0.5, 0.4, 0.7, 0.8)),
    EfficiencyRow("Sinkhorn Trans.", "sinkhorn", (9.1, 7.9, 6.6, 5.3), (0.47, 0.83, 1.13, 1.48), (1.1, 1.6, 2.9, 3.8)),
    EfficiencyRow("Synthesizer", "synthesizer", (8.7, 5.7, 6.6, 1.9), (0.65, 1.98, 4.09, 6.99), (1.1, 1.2, 2.9, 1.4),
                  note="3K as printed (6.6, 2.9x: Sinkhorn's 3K entry; out of line with its 2K and 4K)"),
    EfficiencyRow("BigBird", "bigbird", (7.4, 3.9, 2.7, 1.5), (0.77, 1.49, 2.18, 2.88), (0.9, 0.8, 1.2, 1.1)),
    EfficiencyRow("Linear Trans.", "linear_transformer", (9.1, 9.3, 8.6, 7.8), (0.37, 0.57, 0.80, 1.03),
                  (1.1, 1.9, 3.7, 5.6)),
    EfficiencyRow("Performer", "performer", (9.5, 9.4, 8.7, 8.0), (0.37, 0.59, 0.82, 1.06), (1.2, 1.9, 3.8, 5.7)),
)

# model -> (speed x, memory x) at 4K vs the Mega authors' Transformer
MEGA_TABLE_2_4K: dict[str, tuple[float, float]] = {
    "reformer": (0.8, 0.24),
    "linformer": (5.5, 0.10),
    "bigbird": (1.1, 0.30),
    "performer": (5.7, 0.11),
    "luna": (4.9, 0.16),
    "s4": (4.8, 0.14),  # S4-v2 as reproduced by the Mega authors
    "mega": (2.9, 0.31),
    "mega_chunk": (5.5, 0.13),
}


def lra_row(model: str) -> EfficiencyRow | None:
    return next((r for r in LRA_TABLE if r.model == model), None)


def lra_k(length: int) -> int | None:
    """The table's column (1..4 K tokens) for a benchmark length (1024 -> 1, 4000 and 4096 -> 4), or None."""
    k = round(length / 1000)
    return k if k in LRA_KS and abs(length - 1000 * k) <= 100 else None


def lra_speed_x(model: str, length: int) -> float | None:
    """The paper's relative speed (steps/s over the Transformer's) at ``length``'s column."""
    row, k = lra_row(model), lra_k(length)
    return None if row is None or k is None else row.speed_x[k - 1]


def lra_memory_x(model: str, length: int) -> float | None:
    """Peak memory over the Transformer's at ``length``'s column (derived: the paper prints GB only)."""
    row, base, k = lra_row(model), lra_row("transformer"), lra_k(length)
    return None if row is None or base is None or k is None else row.memory_gb[k - 1] / base.memory_gb[k - 1]


def lra_slower_at_4k(model: str) -> float | None:
    """The paper's 4K speed ratio where it measured the model slower than the Transformer (Reformer, 0.8x), else None."""
    row = lra_row(model)
    return row.speed_x[3] if row is not None and row.speed_x[3] < 1.0 else None
