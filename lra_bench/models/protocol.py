"""The backbone protocol: what a sequence model must do to run in this harness (and what it may declare).

Every model (Mega, S4, the attention zoo, a user's own) is a backbone inside ``SequenceClassifier``
(``lra_bench/models/classifier.py``: embedding -> backbone -> pooling -> head; Retrieval's two documents as one
batch of 2B rows). ``Backbone`` below is that contract; subclassing it is optional (the check is duck-typed), but
its defaults say what the harness assumes when a hook is absent. ``python -m lra_bench.check_model model=<name>``
tests a backbone against every clause.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

INPUTS = ("tokens", "real")  # token ids (ListOps, Text, Retrieval) | real pixel values (Image, Pathfinder, Path-X)


class Backbone(nn.Module):
    """A sequence encoder: ``forward(x: (B, L, D) float, lengths: (B,) long) -> (B, L, D)``.

    The contract:

    - ``x`` holds B right-padded sequences of embeddings (D = the model width, ``model.d_model``); ``lengths[b]``
      is the number of real positions of row b (1 <= lengths[b] <= L). Positions ``t >= lengths[b]`` are pads.
    - The output has x's shape and dtype. Outputs at real positions depend only on that row's real positions: not
      on how much padding follows, not on the values at pads, not on other rows of the batch. The output at pads
      is exactly zero (``sum`` pooling and the pair features rely on it).
    - Padding comes from ``lengths`` only (``lra_bench.models.masks.length_mask``). Never infer it from values:
      pixel value 0 is data, and an embedding at a pad may hold anything.
    - Bidirectional: every LRA task is classification of the whole sequence, so position t may (should) see t+1..L.
    - In eval mode the output is deterministic, and a trained model behaves the same: a norm with running
      statistics or a bias is not zero at pads, so mask after it (a BatchNorm in eval mode with a non-zero running
      mean leaks pads into a convolution otherwise). Batch statistics in train mode (BatchNorm) span rows and pads,
      as in S4's reference; ``check_model`` checks rows and pads in eval mode for that reason.
    - No (L, L) tensors unless the model is quadratic by design; no Python loops over L.

    Optional hooks (the harness reads them when present; the defaults here are what it assumes otherwise):

    - ``param._optim = {"lr": ..., "weight_decay": ...}`` on any parameter: that parameter goes into its own
      optimizer group with those settings (``lra_bench/training/optim.py``; S4/S5 put their SSM parameters there).
    - ``supported_inputs``: which task inputs the model takes, a subset of ``("tokens", "real")``. The classifier
      refuses a task whose input is not in it, with one line.
    - ``max_length``: the longest sequence the model takes (a position table, a fixed projection), or None for
      any. The classifier refuses a longer batch with one line. The CLS token, when the classifier adds one,
      counts.
    """

    supported_inputs: tuple[str, ...] = INPUTS
    max_length: int | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def protocol_problem(backbone: object) -> str | None:
    """Why ``backbone`` cannot be a backbone (a one-line reason), or None: an ``nn.Module`` whose ``forward`` takes
    (x, lengths), whose ``supported_inputs`` (if set) names only known inputs and whose ``max_length`` (if set) is a
    positive int or None."""
    name = type(backbone).__name__
    if not isinstance(backbone, nn.Module):
        return f"{name} is not a torch.nn.Module"
    try:
        params = inspect.signature(backbone.forward).parameters
    except (TypeError, ValueError):
        return None  # a compiled or wrapped forward: nothing to inspect
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in positional):
        return f"{name}.forward must take (x: (B, L, D), lengths: (B,)); it takes ({', '.join(params)})"
    inputs = supported_inputs(backbone)
    unknown = [i for i in inputs if i not in INPUTS]
    if unknown or not inputs:
        return f"{name}.supported_inputs must be a non-empty subset of {INPUTS}, got {tuple(inputs)}"
    limit = getattr(backbone, "max_length", None)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        return f"{name}.max_length must be a positive int or None, got {limit!r}"
    return None


def supported_inputs(backbone: nn.Module) -> tuple[str, ...]:
    """The inputs ``backbone`` declares (a single string counts as one), or every input when it declares none."""
    value = getattr(backbone, "supported_inputs", INPUTS)
    return (value,) if isinstance(value, str) else tuple(value)


def max_length(backbone: nn.Module) -> int | None:
    """The longest sequence ``backbone`` takes, None for any."""
    return getattr(backbone, "max_length", None)
