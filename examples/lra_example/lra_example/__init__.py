"""An example model package for lra_bench: one backbone file (``gated_conv.py``) and its config (``conf/model``)."""
