"""Linear Transformer attention (Katharopoulos et al., 2020, arXiv 2006.16236, Eq. 6), non-causal:

    y_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps),   phi(x) = elu(x) + 1.

The (L, L) weights phi(Q) phi(K)^T are never formed: phi(K)^T V is (E, E) per head, so time and memory are
O(L E^2), linear in L. No 1/sqrt(E) scaling (neither the paper nor LRA has one).

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/linear_transformer/linear_attention.py``
(``linear_attention``, ``elu_feature_map``, ``eps=1e-6`` added to the denominator) inside the shared LRA block
(``linear_transformer.py``: q/k/v/out projections without bias, xavier-uniform).

Differences from LRA (default; ``lra_code=True`` does what LRA's code does):
- Padding: LRA's ``LinearAttention`` ignores its padding mask (``linear_attention.py:137-142, 174-181``: the
  mask only guards a no-op), so pad keys (and, with LRA's ``inputs > 0`` mask, black pixels) enter both sums. By
  default phi(K) is zeroed where ``mask`` is False (length pads and holes), so they contribute nothing to
  phi(K)^T V or to sum phi(K), and outputs at real positions do not depend on padding. A row with no valid key
  attends to all keys, as ``softmax.py`` does. ``lra_code`` ignores ``mask``.
- Attention dropout: LRA's ``linear_attention`` deletes its dropout arguments (its TODO: "figure out how to apply
  attention dropout"); there are no weights to drop, so this mechanism takes no ``dropout`` either.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, M feature dim of phi.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import key_mask, projections, qkv_width, split_heads


def linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator phi(Q) (phi(K)^T V): (B, H, L, E) and denominator phi(Q) (phi(K)^T 1): (B, H, L, 1).

    phi_q, phi_k: (B, H, L, M), v: (B, H, L, E). Each mechanism adds its own stabiliser to the denominator.
    """
    kv = phi_k.transpose(-1, -2) @ v  # (B, H, M, E)
    k_sum = phi_k.sum(-2).unsqueeze(-1)  # (B, H, M, 1)
    return phi_q @ kv, phi_q @ k_sum


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0 (Katharopoulos et al., Sec. 3.2.1)."""
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    """Multi-head non-causal linear attention with phi = elu + 1.

    eps: added to the denominator (LRA's ``linear_attention`` default, 1e-6). lra_code: ``mask`` ignored, as LRA.
    """

    def __init__(self, d_model: int, n_heads: int, d_qkv: int | None = None, eps: float = 1e-6, lra_code: bool = False):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        self.n_heads = n_heads
        self.eps = eps
        self.lra_code = lra_code
        self.qkv, self.out = projections(d_model, d_qkv)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        q, k, v = split_heads(self.qkv(x), self.n_heads)  # (B, H, L, E)
        phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
        if mask is not None and not self.lra_code:  # LRA: no mask at all
            # phi > 0 everywhere, so a masked key must be zeroed after the feature map, not before
            phi_k = phi_k * key_mask(mask)[:, None, :, None].to(phi_k.dtype)
        num, den = linear_attention(phi_q, phi_k, v)
        y = num / (den + self.eps)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))
