"""The options of ``model=gated_conv``, declared for lra_bench's start-up check and option table.

``conf/model/gated_conv.yaml`` points at ``GATED_CONV`` with ``options_schema: lra_example.options:GATED_CONV``: every
run, ``describe`` and ``check_model`` then refuse a bad value (``kernel_size=4``, ``n_layers=0``) with one line naming
it, before anything is built. Without ``options_schema`` nothing is checked but what the constructor itself raises.
The vocabulary (``Int``, ``Float``, ``Choice``, ``relation``...) is ``lra_bench.models.options.rules``; the
classifier's keys come with ``classifier()``.
"""

from lra_bench.models.options.builtin import DROPOUT, LR, SIZE, classifier
from lra_bench.models.options.rules import Option, Schema, relation

B = "net.backbone."

GATED_CONV = Schema("gated_conv", classifier() + (
    Option("dropout", DROPOUT, "dropout of the backbone and head"),
    Option(B + "d_model", SIZE, "model width (= d_model)"),
    Option(B + "n_layers", SIZE, "layers"),
    Option(B + "kernel_size", SIZE, "depthwise kernel width (odd: centred)"),
    Option(B + "dilation_growth", SIZE, "layer i dilates by growth^i"),
    Option(B + "dropout", DROPOUT, "dropout"),
    Option(B + "conv_lr", LR, "the kernels' own lr (no weight decay)"),
), (relation(B + "kernel_size", lambda v: v[B + "kernel_size"] % 2 == 1, "must be odd (a centred kernel)", "odd"),))
