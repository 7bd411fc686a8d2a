"""lra_bench: a Long Range Arena benchmark harness (Mega, Mega-chunk, Transformer, S4/S4D)."""

__version__ = "0.1.0"
