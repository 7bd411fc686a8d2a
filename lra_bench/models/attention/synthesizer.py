"""Synthesizer attention (Tay et al., 2021, arXiv 2005.00743): attention weights synthesized from positions or
from each token alone, here (as in LRA) added to the dot-product logits:

    Y_h = softmax(S_h + Q_h K_h^T / sqrt(E)) V_h,   S_h the sum of the chosen modes' logits (L, L):
        random             S_h = R_h[:L, :L],               R_h a learned (max_length, max_length) matrix;
        factorized_random  S_h = R1_h[:L] R2_h[:, :L],      R1_h (max_length, k), R2_h (k, max_length);
        dense              S_h[i] = (W2 relu(W1_h x_i))[:L], W1: D -> (H, E), W2: E -> max_length (shared by heads);

and the dot-product term dropped when ``ignore_dot_product`` (then K = V = X W_v and there is no query).

Cost: O(L^2) time and memory, as full attention (the (B, H, L, L) weights are formed; with the dot product
they go through ``scaled_dot_product_attention`` as an additive mask), plus H max_length^2 parameters in
``random`` mode (at max_length 4001 and 4 heads: 64 M per layer). The Synthesizer does not avoid (L, L).

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/synthesizer/synthesizer_attention.py``
(``SynthesizerAttention``, ``synthetic_attention``) and ``synthesizer.py`` (``SynthesizerBlock``,
``SynthesizerEncoder``: ``synthesizer_mode='random'``, ``ignore_dot_product=False``, ``max_length`` = the
encoder's ``max_len``, CLS included). The variant LRA ran is Random + dot product (the paper's "R+V") on every
task: ``listops`` and ``matching`` ``configs/synthesizer_base.py`` set only the model type (encoder defaults);
``image/configs/{cifar10,pathfinder32}/synthesizer_base.py`` set ``synthesizer_mode = "random"``;
``text_classification/configs/synthesizer_base.py`` sets ``ignore_dot_product = True``, ``synthesizer_mode =
"factorized_random"`` and ``k = 32`` at the config's top level, but ``text_classification/train.py`` builds
the model from a fixed list of keys and never reads them, so that run used the defaults too. Hence the
defaults here: ``mode="random"``, ``ignore_dot_product=False``; ``factorized_random``, ``dense`` and sums such
as ``dense+random`` (LRA's mode strings) are options. As LRA: projections without bias, xavier-uniform (the 3-D
random matrices with flax's fans, bound sqrt(6 / (H (fan_in + fan_out)))), dropout on the attention weights.

Default (``lra_code=False``), the paper's Synthesizer computed correctly: R holds logits between absolute
positions, so the logits a real query gives a real key do not depend on how long the batch is; masking the keys
where ``mask`` is False (length pads and holes) removes everything else, in every mode, and the softmax then
normalises over the real keys only. So outputs at real positions do not depend on the pads (R's rows and columns
past the true length only ever meet masked keys or pad queries). ``dense`` computes the paper's B_h[i] = F_h(X_i).
A masked query gets flax's -1e10 on every key, i.e. the plain mean of all values (as ``softmax.py``); a row without
any valid key attends to all.

``lra_code=True``, LRA's code (``synthesizer_attention.py`` at cd31e5c6) where it differs:
- ``dense``: the (B, L, H, max_length) logits are reshaped to (B, H, L, max_length) without a transpose (lines
  332-335, its TODO "check if this reshape is needed"), which mixes rows of different positions and heads, then
  cut to the first L columns. No LRA config uses ``dense``.
- ``ignore_dot_product``: no mask at all (lines 390-400 build it only with the dot product), so pads are attended
  and how many there are changes every output. Its text config asks for it, but ``text_classification/train.py``
  never passes it (above), so LRA's runs never used it.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, M = max_length, k factor rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import average_masked_queries, key_mask, qkv_width

MODES = ("random", "factorized_random", "dense")


def flax_xavier_uniform_(w: torch.Tensor) -> torch.Tensor:
    """flax's xavier-uniform on an (H, fan_in, fan_out) kernel: leading axes count in both fans."""
    receptive = math.prod(w.shape[:-2])
    bound = math.sqrt(6.0 / (receptive * (w.shape[-2] + w.shape[-1])))
    return nn.init.uniform_(w, -bound, bound)


class SynthesizerAttention(nn.Module):
    """Multi-head Synthesizer attention; ``mode``: ``random`` | ``factorized_random`` | ``dense`` or a ``+``-sum.

    ``max_length``: the longest L (the synthesized logits' size); ``k``: the rank of ``factorized_random``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_length: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        mode: str = "random",
        ignore_dot_product: bool = False,
        k: int = 32,
        lra_code: bool = False,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        parts = set(mode.split("+"))
        if not parts <= set(MODES) or {"random", "factorized_random"} <= parts:
            raise ValueError(f"synthesizer mode must be one of {MODES} or a '+'-sum of dense and one random mode, "
                             f"got {mode!r}")
        self.n_heads = n_heads
        self.max_length = max_length
        self.dropout = dropout
        self.modes = parts
        self.ignore_dot_product = ignore_dot_product
        self.lra_code = lra_code
        E = d_qkv // n_heads
        if not ignore_dot_product:
            self.query = nn.Linear(d_model, d_qkv, bias=False)
            self.key = nn.Linear(d_model, d_qkv, bias=False)
        self.value = nn.Linear(d_model, d_qkv, bias=False)
        if "random" in parts:
            self.R = nn.Parameter(flax_xavier_uniform_(torch.empty(n_heads, max_length, max_length)))
        if "factorized_random" in parts:
            self.R1 = nn.Parameter(flax_xavier_uniform_(torch.empty(n_heads, max_length, k)))
            self.R2 = nn.Parameter(flax_xavier_uniform_(torch.empty(n_heads, k, max_length)))
        if "dense" in parts:
            self.W1 = nn.Linear(d_model, d_qkv, bias=False)  # LRA's dense_syn: D -> (H, E)
            self.W2 = nn.Linear(E, max_length, bias=False)  # LRA's dense_syn2: E -> max_length, shared by heads
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        for lin in (m for m in self.modules() if isinstance(m, nn.Linear)):
            nn.init.xavier_uniform_(lin.weight)

    def synthetic_logits(self, x: torch.Tensor) -> torch.Tensor:
        """S: (1 or B, H, L, L), the sum of the modes' logits for x: (B, L, D)."""
        B, L, _ = x.shape
        terms = []
        if "random" in self.modes:  # unsliced at L = max_length: slicing's backward would copy (H, L, L) once more
            terms.append((self.R if L == self.max_length else self.R[:, :L, :L])[None])
        if "factorized_random" in self.modes:
            terms.append(torch.matmul(self.R1[:, :L], self.R2[:, :, :L])[None])
        if "dense" in self.modes:
            h = F.relu(self.W1(x).view(B, L, self.n_heads, -1))  # (B, L, H, E)
            if self.lra_code:  # LRA: (B, L, H, M) reshaped to (B, H, L, M) without a transpose, then cut to L
                terms.append(self.W2(h).reshape(B, self.n_heads, L, self.max_length)[..., :L])
            else:  # only the first L of W2's max_length outputs are kept: compute just those
                terms.append(F.linear(h, self.W2.weight[:L]).transpose(1, 2))  # (B, H, L, L): row i from x_i alone
        return sum(terms[1:], terms[0])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        if L > self.max_length:
            raise ValueError(f"sequence length {L} exceeds the Synthesizer's max_length ({self.max_length}); "
                             "raise model.net.backbone.max_length")
        H = self.n_heads
        v = self.value(x).view(B, L, H, -1).transpose(1, 2)  # (B, H, L, E)
        S = self.synthetic_logits(x)
        if self.lra_code and self.ignore_dot_product:
            mask = None  # LRA builds no mask without the dot product
        if mask is not None and not bool(mask.all()):  # all real: S stays (1, H, L, L), broadcast over the batch
            S = S.masked_fill(~key_mask(mask)[:, None, None, :], float("-inf"))
        p = self.dropout if self.training else 0.0
        if self.ignore_dot_product:
            weights = F.dropout(torch.softmax(S, dim=-1), p, self.training)
            y = torch.matmul(weights, v)
        else:
            q = self.query(x).view(B, L, H, -1).transpose(1, 2)
            k = self.key(x).view(B, L, H, -1).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=S, dropout_p=p)
        if mask is not None and not bool(mask.all()):
            y = average_masked_queries(y, v, mask)  # LRA: a masked query averages all values
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
