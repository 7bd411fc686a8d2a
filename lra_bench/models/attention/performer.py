"""Performer attention (Choromanski et al., 2021, arXiv 2009.14794): kernelised attention with a feature map phi,

    y_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j)),

computed as in ``linear.py`` without the (L, L) weights: O(L M E) time, O(L M) memory for M features.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/performer/performer_attention.py`` (a fork
of ``google-research/performer/fast_attention/jax/fast_attention.py``) and ``performer.py``. LRA runs two kernels:

- ``kernel="relu"`` (``make_fast_generalized_attention``, ``performer.py``'s default ``attention_fn_cls =
  'generalized'``, used on Text, Retrieval, Image and Pathfinder, whose configs pass no kernel): phi(x) =
  relu(x) + 1e-3 with ``features_type='deterministic'``, i.e. no random projection at all (M = E), no data
  scaling, no denominator stabiliser.
- ``kernel="softmax"`` (FAVOR+, ``make_fast_softmax_attention``, set only by ``listops/configs/performer_base.py``
  with ``nb_features=2``): positive random features estimating exp(q.k / sqrt(E)),
  phi(x) = M^-1/2 (exp(W x' - |x'|^2 / 2 - max) + eps), x' = x E^-1/4, with W (M, E) Gaussian rows made
  orthogonal in blocks of E and rescaled to chi-distributed norms (``ortho_scaling=0``), redrawn at every call
  (``redraw_features=True``), eps = the stabiliser 1e-6, and the denominator R raised by 2e-6 where |R| <= 1e-6.
  The max (over features for a query; over features and keys for the keys) only keeps exp from overflowing.

Differences from LRA (default; ``lra_code=True`` does what LRA's code does, except JAX's random values):
- Padding: flax passes the padding mask to the attention function as ``bias``, which LRA's fast attention
  ignores (``performer_attention.py:550-561``), so pad keys (and, with LRA's ``inputs > 0`` mask, black pixels)
  enter both sums and the keys' max. By default phi(K) is zeroed where ``mask`` is False (pads and holes) and the
  keys' max runs over valid keys only, so outputs at real positions do not depend on padding. A row with no
  valid key attends to all keys, as ``softmax.py`` does. ``lra_code`` ignores ``mask``.
- Redrawing: LRA draws a new W at every call, train and eval, from ``PRNGKey(int32(ceil(sum(query) * 1e7)))``
  (``performer_attention.py:579-584``): the whole batch's queries seed it, so an example's prediction depends on
  the rest of its batch. By default a new W is drawn from torch's generator at every training call and kept in
  the ``projection`` buffer, so evaluation uses the last training draw (saved with the checkpoint) and is
  deterministic. ``lra_code`` redraws at every call from a torch generator seeded with LRA's integer (saturated
  to int32): the same dependence on the batch, not JAX's values (JAX's threefry draws are not reproduced).
- Orthogonal features: LRA (and ``performer-pytorch``) take Q of a Householder QR as is
  (``performer_attention.py:349-366``), whose sign convention makes Q not Haar-distributed, so the rows are not
  marginally Gaussian and FAVOR+ is biased (raised in google-research/google-research#436 and
  lucidrains/performer-pytorch#8; at E = 4 the mean of 40,000 features is 30 standard errors off
  exp(q.k / sqrt(E))). By default Q's columns are multiplied by sign(diag R) (Mezzadri, 2007), which makes the
  features unbiased; ``lra_code`` keeps LRA's Q.
- The keys' and queries' max is detached (as ``performer-pytorch`` does): its value cancels between numerator
  and denominator up to eps, so only O(eps) gradient is dropped (both settings).
- Attention dropout: none, as in LRA (its fast attention ignores the dropout arguments); no ``dropout`` option.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, M features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import key_mask, projections, qkv_width, split_heads

from lra_bench.models.attention.linear import linear_attention

KERNELS = ("relu", "softmax")
FEATURES = ("deterministic", "ortho", "iid")


INT32 = (-(2**31), 2**31 - 1)


def haar_orthogonal(n: int, device: torch.device | None = None, generator: torch.Generator | None = None,
                    sign_fix: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A Haar-distributed (n, n) orthogonal matrix: QR of a Gaussian matrix with Q's columns multiplied by the
    signs of R's diagonal (Mezzadri, 2007). Without that fix (``sign_fix=False``, LRA's) Q inherits Householder
    QR's sign convention (LAPACK makes r_11 = -sign(a_11) |a_1|, so Q's first column always has a negative first
    entry): its rows are not marginally N(0, I) after the chi rescaling, and FAVOR+ built from them is biased."""
    Q, R = torch.linalg.qr(torch.randn(n, n, device=device, generator=generator, dtype=dtype))
    return Q * torch.sign(torch.diagonal(R)) if sign_fix else Q


def gaussian_orthogonal_matrix(n_rows: int, n_cols: int, device: torch.device | None = None,
                               generator: torch.Generator | None = None, sign_fix: bool = True,
                               dtype: torch.dtype | None = None) -> torch.Tensor:
    """(n_rows, n_cols): blocks of n_cols orthonormal rows, each row rescaled to the norm of an independent
    Gaussian vector, so every row is marginally N(0, I) and rows within a block are orthogonal (LRA's
    ``GaussianOrthogonalRandomMatrix`` with ``ortho_scaling=0``: the blocks drawn first, then the norms)."""
    n_blocks = math.ceil(n_rows / n_cols)
    rows = torch.cat([haar_orthogonal(n_cols, device, generator, sign_fix, dtype).T for _ in range(n_blocks)])[:n_rows]
    norms = torch.randn(n_rows, n_cols, device=device, generator=generator, dtype=dtype).norm(dim=1, keepdim=True)
    return norms * rows


def draw_projection(kind: str, n_rows: int, n_cols: int, device: torch.device | None = None,
                    generator: torch.Generator | None = None, sign_fix: bool = True,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    """The random matrix W (n_rows, n_cols) of ``ortho`` or ``iid`` Gaussian features (``dtype``: torch's default)."""
    if kind == "ortho":
        return gaussian_orthogonal_matrix(n_rows, n_cols, device, generator, sign_fix, dtype)
    return torch.randn(n_rows, n_cols, device=device, generator=generator, dtype=dtype)


def lra_redraw_seed(q: torch.Tensor) -> int:
    """LRA's seed for a redraw, ``int32(ceil(sum(query) * 1e7))`` over the whole batch
    (``performer_attention.py:581-582``); out-of-range sums saturate (XLA leaves the float-to-int conversion of those
    to the backend)."""
    return int(torch.ceil(q.sum() * 1e7).clamp(*INT32).item())


def favor_exponent(x: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For x (..., L, E) and W (M, E): (W x', -|x'|^2 / 2) with x' = x E^-1/4, shapes (..., L, M) and (..., L, 1).

    E_w[exp(w.q' - |q'|^2/2) exp(w.k' - |k'|^2/2)] = exp(q'.k') = exp(q.k / sqrt(E)) for w ~ N(0, I): FAVOR+'s
    positive random features (Choromanski et al., Lemma 1).
    """
    x = x * x.size(-1) ** -0.25
    return x @ W.T.to(x.dtype), -0.5 * x.square().sum(-1, keepdim=True)


def softmax_features(
    x: torch.Tensor, W: torch.Tensor, is_query: bool, eps: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """phi(x) = M^-1/2 (exp(W x' - |x'|^2/2 - max) + eps): x (B, H, L, E) -> (B, H, L, M).

    The max is per query over features, and over features and valid keys (``valid``: (B, L) bool) for keys.
    """
    proj, sq = favor_exponent(x, W)
    if is_query:
        top = proj.amax(-1, keepdim=True)
    else:
        masked = proj if valid is None else proj.masked_fill(~valid[:, None, :, None], float("-inf"))
        top = masked.amax((-1, -2), keepdim=True)
    return W.size(0) ** -0.5 * (torch.exp(proj + sq - top.detach()) + eps)


def relu_features(x: torch.Tensor, W: torch.Tensor | None, eps: float) -> torch.Tensor:
    """phi(x) = relu(W x) + eps, or relu(x) + eps without W (LRA's deterministic features): (B, H, L, E|M)."""
    return F.relu(x if W is None else x @ W.T.to(x.dtype)) + eps


class PerformerAttention(nn.Module):
    """Multi-head non-causal Performer attention. Defaults: LRA's ``make_fast_generalized_attention``.

    kernel: ``relu`` (generalized attention) or ``softmax`` (FAVOR+ positive random features).
    features: ``deterministic`` (relu only: no projection, M = E), ``ortho`` or ``iid`` Gaussian W (M, E).
    n_features: M for random features. redraw: a new W at every training call.
    feature_eps: added to every feature (LRA: 1e-3 for relu, the stabiliser 1e-6 for softmax).
    stabilizer: the denominator R becomes R + 2 * stabilizer where |R| <= stabilizer (LRA: 0 relu, 1e-6 softmax).
    lra_code: LRA's code (module docstring): ``mask`` ignored, W redrawn at every call (with ``redraw``) from a seed
    made of the queries, orthogonal blocks without the sign fix.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        kernel: str = "relu",
        features: str = "deterministic",
        n_features: int = 256,
        redraw: bool = False,
        feature_eps: float = 1e-3,
        stabilizer: float = 0.0,
        lra_code: bool = False,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if kernel == "softmax" and features == "deterministic":
            raise ValueError("the softmax kernel needs random features: features=ortho or iid")
        self.n_heads = n_heads
        self.kernel = kernel
        self.features = features
        self.redraw = redraw and features != "deterministic"
        self.feature_eps = feature_eps
        self.stabilizer = stabilizer
        self.lra_code = lra_code
        d_head = d_qkv // n_heads
        W = None if features == "deterministic" else draw_projection(features, n_features, d_head,
                                                                     sign_fix=not lra_code)
        self.register_buffer("projection", W)  # persistent: a fixed W is part of the model
        self.qkv, self.out = projections(d_model, d_qkv)

    @torch.no_grad()
    def redraw_projection(self, seed: int | None = None) -> None:
        """Draw a new W in place (LRA's ``redraw_features``): from torch's generator, or one seeded with ``seed``."""
        W = self.projection
        generator = None if seed is None else torch.Generator(W.device).manual_seed(seed)
        W.copy_(draw_projection(self.features, W.size(0), W.size(1), W.device, generator, not self.lra_code, W.dtype))

    def feature_map(
        self, q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi(Q), phi(K)) for q, k (B, H, L, E); phi(K) is zero at keys that are not ``valid`` (B, L)."""
        if self.kernel == "softmax":
            phi_q = softmax_features(q, self.projection, True, self.feature_eps)
            phi_k = softmax_features(k, self.projection, False, self.feature_eps, valid)
        else:
            phi_q = relu_features(q, self.projection, self.feature_eps)
            phi_k = relu_features(k, self.projection, self.feature_eps)
        if valid is not None:
            phi_k = phi_k * valid[:, None, :, None].to(phi_k.dtype)
        return phi_q, phi_k

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)  # (B, H, L, E)
        if self.redraw and self.lra_code:  # LRA: at every call, train and eval, seeded by the queries
            self.redraw_projection(lra_redraw_seed(q))
        elif self.redraw and self.training:
            self.redraw_projection()
        valid = None if mask is None or self.lra_code else key_mask(mask)  # LRA: no mask at all
        phi_q, phi_k = self.feature_map(q, k, valid)
        num, den = linear_attention(phi_q, phi_k, v)
        if self.stabilizer > 0:
            den = den + 2 * self.stabilizer * (den.abs() <= self.stabilizer).to(den.dtype)
        return self.out((num / den).transpose(1, 2).reshape(B, L, -1))
