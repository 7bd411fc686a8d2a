"""FLOPs of one training step: what ``FlopCounterMode`` counts, completed, and hand counts to check it against.

Counting convention (README §6): the FLOPs the implementation executes in its matmuls and FFTs, forward and
backward. A real multiply-add is 2 FLOPs; a complex one 8 (4 real products, 4 sums), so a complex matmul counts
4x the real count ``FlopCounterMode`` gives it; a dense GEMM counts in full even where an operand holds structural
zeros (the chunked scan's triangular T x T Toeplitz blocks, ``models/ssm/scan.py``); an FFT of n points costs
2.5 n log2 n for a real (r2c / c2r) transform and 5 n log2 n for a complex one. Elementwise work (softmax, norms,
activations, the scan's power tables) is not counted.

What ``FlopCounterMode`` (torch 2.x) misses and ``flop_formulas`` adds: FFTs, CPU SDPA kernels, the in-place
``baddbmm_`` / ``addmm_`` (the scan's carry and complex GEMMs: without them S5's and LRU's scans counted half),
and the factor 4 of complex matmuls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

LINEAR_TRAIN = 6  # forward 2 m n k, backward 2 m n k for the input and 2 m n k for the weight


# --- the counter ---------------------------------------------------------------------------------

def _complex_aware(counted: Callable[..., int]) -> Callable[..., int]:
    """A registered matmul formula of ``FlopCounterMode`` (it takes the op's tensors), times 4 when an operand is
    complex."""
    import torch
    from torch.utils import _pytree

    def raw(*args, out_val=None, **kwargs) -> int:
        tensors = [a for a in _pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        return counted(*args, out_val=out_val, **kwargs) * (4 if any(t.is_complex() for t in tensors) else 1)

    raw._get_raw = True
    return raw


def flop_formulas() -> dict:
    """Formulas for the ops ``FlopCounterMode`` leaves at zero or under-counts (see the module docstring)."""
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def transform(flops_per_point: float, real_side: str):
        """n log2 n per transform along ``dim``; the real side (input of r2c, output of c2r) gives n and the batch."""
        def formula(in_shape, dim, *args, out_shape=None, **kwargs) -> int:
            shape = out_shape if real_side == "out" else in_shape
            n = math.prod(shape[d] for d in dim)
            return int(flops_per_point * n * max(math.log2(n), 1.0) * (math.prod(shape) // max(n, 1)))
        return formula

    def sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(q, k, v)

    def sdpa_cpu_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_out, q, k, v)

    mapping: dict[Any, Callable[..., int]] = {
        aten._fft_r2c: transform(2.5, "in"), aten._fft_c2r: transform(2.5, "out"), aten._fft_c2c: transform(5.0, "in"),
    }
    for registered, ops in ((aten.mm, (aten.mm,)), (aten.bmm, (aten.bmm,)), (aten.addmm, (aten.addmm, aten.addmm_)),
                            (aten.baddbmm, (aten.baddbmm, aten.baddbmm_))):
        for op in ops:
            mapping[op] = _complex_aware(fc.flop_registry[registered])
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_cpu
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = sdpa_cpu_backward
    return mapping


def count_step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of ``step`` (a training step: forward, loss, backward) under the completed counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
        step()
    return counter.get_total_flops()


# --- hand counts ---------------------------------------------------------------------------------

def linear(rows: int, d_in: int, d_out: int) -> int:
    """A trained Linear (or a GEMM of two trained operands) over ``rows`` rows: forward and backward."""
    return LINEAR_TRAIN * rows * d_in * d_out


def fft_real(n: int) -> float:
    return 2.5 * n * math.log2(n)


def fft_complex(n: int) -> float:
    return 5.0 * n * math.log2(n)


def fft_convolution(transforms: int, kernels: int, n: int) -> float:
    """y = irfft(rfft(u) rfft(k)) with ``transforms`` inputs u and ``kernels`` kernels k, both trained: forward
    r2c (u, k) and c2r; backward: c2r's adjoint is an r2c of the gradient, r2c's a c2c (u and k)."""
    return (2 * transforms + kernels) * fft_real(n) + transforms * fft_real(n) + (transforms + kernels) * fft_complex(n)


def head(cfg, batch: int, d_in: int) -> int:
    """The classifier head: Linear layers d_in -> hidden... -> classes on the pooled (batch, d_in) features."""
    hidden = cfg.model.net.head_hidden
    widths = [d_in, *([hidden] if isinstance(hidden, int) and hidden else list(hidden or []))]
    widths.append(int(cfg.task.num_classes))
    return sum(linear(batch, a, b) for a, b in zip(widths, widths[1:]))


def chunked_scan(states: int, rows: int, length: int, chunk: int) -> int:
    """One direction of ``scan.py``'s recurrence, forward and backward (executed GEMMs, Toeplitz zeros included).

    A level on (rows, length): 4 real (N, rows C, T) x (N, T, T) GEMMs for the complex product, and when C > 1
    the next level on the C chunk ends plus 2 rank-2 carry updates (N, rows C, 2) x (N, 2, T). The backward is
    the same scan again plus the (N, 2, rows L - 1) x (N, rows L - 1, 2) reduction for the grad of log lambda and
    its (N, 2, rows - 1) edge correction."""
    def level(length: int) -> int:
        T = min(chunk, length)
        C = -(-length // T)
        flops = 4 * 2 * states * rows * C * T * T
        if C > 1:
            flops += level(C) + 2 * 2 * states * rows * C * 2 * T
        return flops

    forward = level(length)
    return 2 * forward + 2 * states * 4 * (rows * length - 1) + 2 * states * 4 * (rows - 1)


def hand_count(model: str, cfg, batch: int, length: int) -> float:
    """FLOPs of one training step of ``model`` as composed in ``cfg`` (Text-like tasks: one document, no pair),
    counted by hand from the architecture (see each branch) under the module docstring's convention."""
    bb = cfg.model.net.backbone
    D, n_layers, B, L = int(cfg.model.d_model), int(bb.n_layers), batch, length
    if model in ("transformer", "transformer_vanilla"):
        # +1 position for CLS; per layer Q, K, V (D -> d_qkv), out (d_qkv -> D), MLP D -> d_ff -> D; attention
        # QK^T and AV: 2 x 2 B L^2 d_qkv forward, twice that backward
        Lc = L + int(cfg.model.net.pooling == "cls")
        dq = int(bb.d_qkv or D)
        per_layer = 3 * linear(B * Lc, D, dq) + linear(B * Lc, dq, D) + linear(B * Lc, D, int(bb.d_ff)) \
            + linear(B * Lc, int(bb.d_ff), D) + 3 * 2 * 2 * B * Lc * Lc * dq
        return n_layers * per_layer + head(cfg, B, D)
    if model == "s4d":
        # per layer: the FFT convolution (B H signals and one two-sided kernel per channel, n = 2L), the kernel's
        # Vandermonde product (channels, H, Q, N/2) x (H, N/2, R) complex (8 FLOPs a multiply-add, both operands
        # trained: 3x), and the GLU's Linear(H, 2H)
        channels = 2 if bb.bidirectional else 1
        R = 1 << max(0, math.ceil(math.log2(L) / 2))
        Q = -(-L // R)
        vandermonde = 3 * 8 * channels * D * Q * (int(bb.d_state) // 2) * R
        per_layer = fft_convolution(B * D, D, 2 * L) + vandermonde + linear(B * L, D, 2 * D)
        return n_layers * per_layer + head(cfg, B, D)
    if model in ("s5", "lru"):
        # per layer: the input GEMM (2P, H) x (H, B L) (P stored complex states), per direction the chunked scan
        # and the output GEMM (B L, 2P) x (2P, H); S5's GLU gate(s) (H -> H) or LRU's GLU Linear(H, 2H)
        P = int(bb.d_state) // (2 if model == "s5" and bb.conj_sym else 1)
        directions = 2 if bb.bidirectional else 1
        ssm = linear(2 * P, D, B * L) + directions * (chunked_scan(P, B, L, int(bb.chunk)) + linear(B * L, 2 * P, D))
        if model == "lru":
            mix = linear(B * L, D, 2 * D)
        else:
            mix = {"gelu": 0, "half_glu1": 1, "half_glu2": 1, "full_glu": 2}[bb.activation] * linear(B * L, D, D)
        return n_layers * (ssm + mix) + head(cfg, B, D)
    if model in ("mega", "mega_chunk"):
        # per layer (L padded to a chunk multiple): v_proj D -> H, mx_proj D -> 2D + Z + H, h_proj H -> D, the NFFN
        # D -> F -> D; attention per chunk of C: scores C^2 Z and weights x V C^2 H, each 2 FLOPs forward and 4
        # backward; the EMA kernel (2D, A, N) x (2D, N, R) (bidirectional: 2D kernels), both sides trained; its FFT
        # convolution over n = the fast size >= L + K - 1 (K = min(truncation, L) taps)
        from lra_bench.models.mega.ema import fast_fft_size

        H, Z, F, N = int(bb.d_hidden), int(bb.d_qk), int(bb.d_ffn), int(bb.n_dim)
        C = int(bb.chunk_size) if 0 < int(bb.chunk_size) < L else L
        Lp = -(-L // C) * C
        K = min(int(bb.truncation), Lp) if bb.truncation else Lp
        R = 1 << max(0, math.ceil(math.log2(K) / 2))
        A = -(-K // R)
        kernels = (2 if bb.get("bidirectional", True) else 1) * D
        projections = linear(B * Lp, D, H) + linear(B * Lp, D, 2 * D + Z + H) + linear(B * Lp, H, D) \
            + linear(B * Lp, D, F) + linear(B * Lp, F, D)
        attention = B * (Lp // C) * 6 * C * C * (Z + H)
        ema = linear(kernels * A, N, R) + fft_convolution(B * D, D, fast_fft_size(Lp + K - 1))
        return n_layers * (projections + attention + ema) + head(cfg, B, D)
    raise KeyError(f"no hand count for {model!r}")


def upper_bound(cfg, net, batch: int, length: int) -> float:
    """A generous ceiling for any model's step: 10 x (6 FLOPs per parameter per token, as if every parameter
    were a matmul weight used at every position, plus an all-pairs attention term 12 B L^2 W per layer of the
    widest width W the config names, plus FFTs of 2L over every channel). An over-count by a factor (a matmul
    counted per token that runs once, an L x L term counted L times) passes it."""
    bb = cfg.model.net.backbone
    widths = [int(v) for k, v in bb.items() if isinstance(v, int) and not isinstance(v, bool)
              and (k.startswith("d_") or k in ("n_heads",)) and v]
    W = max([int(cfg.model.d_model), *widths])
    n_layers = int(bb.get("n_layers", 1))
    params = sum(p.numel() for p in net.parameters())
    BL = batch * (length + 1)
    return 10 * (6 * params * BL + n_layers * 12 * batch * (length + 1) ** 2 * W
                 + n_layers * 20 * fft_complex(2 * (length + 1)) * batch * W)
