"""``lra_code=true``: each mechanism against a numpy restatement of LRA's released JAX code, matched weights, float64.

The restatements below follow ``google-research/long-range-arena`` at cd31e5c6 line by line (each names the file and
lines it restates), written from reading that code, not from ours. Where flax adds -1e10 to a masked score, LRA's
float32 wipes out the score: a row with no allowed key is then a uniform average (``flax_softmax`` below says so
once); every other masked weight is exactly 0 in both dtypes.
Also: the switch reaches every mechanism from one top-level key, no preset sets a quirk option of its own, the
classifier's input pipeline and pooling, LRA's cosine schedule, and result.json / report marking.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lra_bench.models.attention.bigbird import BigBirdAttention
from lra_bench.models.attention.linear import LinearAttention
from lra_bench.models.attention.linformer import LinformerAttention
from lra_bench.models.attention.local import LocalAttention
from lra_bench.models.attention.longformer import LongformerAttention
from lra_bench.models.attention.performer import PerformerAttention
from lra_bench.models.attention.reformer import ReformerAttention
from lra_bench.models.attention.sinkhorn import SinkhornAttention
from lra_bench.models.attention.softmax import SoftmaxAttention
from lra_bench.models.attention.sparse import SparseAttention
from lra_bench.models.attention.synthesizer import SynthesizerAttention
from lra_bench.models.attention.transformer import TransformerEncoder
from lra_bench.models.classifier import SequenceClassifier
from lra_bench.training.optim import lr_factor
from tests.conftest import compose_config

TOL = dict(atol=1e-10, rtol=0)


# ---- shared pieces of flax's deprecated nn, as LRA calls them -------------------------------------------------------

def flax_softmax(scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """softmax(scores + where(allowed, 0, -1e10)) as float32 computes it: masked weights 0, and a row with nothing
    allowed uniform (score - 1e10 rounds to -1e10 for every key)."""
    if allowed is not None:
        allowed = np.broadcast_to(allowed, scores.shape)
        empty = ~allowed.any(-1, keepdims=True)
        scores = np.where(allowed | empty, np.where(empty, 0.0, scores), -np.inf)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make_padding_mask(pm_q: np.ndarray, pm_k: np.ndarray) -> np.ndarray:
    """flax ``make_padding_mask`` for one attention axis: (N, T, 1) query and key masks -> (N, 1, T, T)."""
    return (pm_q[:, :, 0][:, None, :, None] * pm_k[:, :, 0][:, None, None, :]) > 0


def dense_general_in(W: torch.Tensor, H: int) -> np.ndarray:
    """nn.Linear weight (H E, D) -> DenseGeneral kernel (D, H, E)."""
    return W.detach().numpy().T.reshape(W.shape[1], H, -1)


def dense_general_out(W: torch.Tensor, H: int) -> np.ndarray:
    """nn.Linear weight (D, H E) -> DenseGeneral kernel over axes (-2, -1): (H, E, D)."""
    return W.detach().numpy().T.reshape(H, -1, W.shape[0])


def fused(qkv: torch.nn.Linear, H: int) -> list[np.ndarray]:
    """Our fused q/k/v projection -> LRA's three DenseGeneral kernels (D, H, E)."""
    return [dense_general_in(w, H) for w in qkv.weight.chunk(3, dim=0)]


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


# ---- Reformer: reformer_attention.py ---------------------------------------------------------------------------------

def lra_look_one_back(x: np.ndarray) -> np.ndarray:  # lines 23-32
    return np.concatenate([x, np.concatenate([x[-1:], x[:-1]], axis=0)], axis=1)


def lra_lsh_single_head(query, value, R, n_buckets, n_hashes):  # lines 128-215, R the (E, K, nb/2) rotation
    seqlen, qdim = query.shape
    chunk_size = n_hashes * n_buckets
    rotated = np.einsum("tf,fhi->hti", query, R)
    buckets = np.argmax(np.concatenate([rotated, -rotated], axis=-1), axis=-1)
    buckets = (buckets + (np.arange(n_hashes) * n_buckets)[:, None]).reshape(-1)
    ticker = np.arange(n_hashes * seqlen)
    sticker = ticker[np.argsort(seqlen * buckets + ticker % seqlen, kind="stable")]  # sort_key_val
    undo_sort = ticker[np.argsort(sticker, kind="stable")]
    st = sticker % seqlen
    bqk = query[st].reshape(chunk_size, -1, qdim)
    bv = lra_look_one_back(value[st].reshape(chunk_size, -1, value.shape[-1]))
    bk = lra_look_one_back(bqk)  # length_norm=False
    dots = np.einsum("hie,hje->hij", bqk, bk) * qdim**0.5
    lse = np.log(np.exp(dots - dots.max(-1, keepdims=True)).sum(-1, keepdims=True)) + dots.max(-1, keepdims=True)
    x = np.matmul(np.exp(dots - lse), bv).reshape(-1, qdim)
    o = x[undo_sort]  # permute_via_gather
    logits = lse.reshape(-1)[undo_sort].reshape(n_hashes, seqlen, 1)  # permute_via_sort by sticker
    probs = np.exp(logits - np.log(np.exp(logits).sum(0, keepdims=True)))
    return (o.reshape(n_hashes, seqlen, qdim) * probs).sum(0)


def lra_reformer(x, m: ReformerAttention):  # ReformerAttention.apply, lines 296-339 (padding_mask never used)
    B, L, D = x.shape
    H = m.n_heads
    x = np.pad(x, ((0, 0), (0, 10 - L % 10), (0, 0)))  # chunk_len=10
    query = np.einsum("bld,dhe->blhe", x, dense_general_in(m.query_key.weight, H))
    value = np.einsum("bld,dhe->blhe", x, dense_general_in(m.value.weight, H))
    R = as_np(m.rotations[0])
    out = np.stack([np.stack([lra_lsh_single_head(query[b, :, h], value[b, :, h], R, m.n_buckets, m.n_hashes)
                              for h in range(H)]) for b in range(B)])  # vmap over heads then batch: (B, H, Lp, E)
    return out.reshape(B, x.shape[1], D)[:, :L]


@pytest.mark.parametrize("length, n_hashes", [(37, 1), (40, 2), (23, 3)])
def test_reformer_lra_code_is_lras_code(length: int, n_hashes: int) -> None:
    torch.manual_seed(0)
    m = ReformerAttention(16, 4, n_hashes=n_hashes, n_buckets=10 if length != 23 else 6, lra_code=True).double().eval()
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length - 9:] = False  # ignored by LRA's Reformer
    torch.testing.assert_close(m(x, mask), torch.from_numpy(lra_reformer(as_np(x), m)), **TOL)


def test_reformer_head_reshape_without_transpose_mixes_positions() -> None:
    """LRA's (B, H, Lp, E) -> (B, Lp, H E): an input change at the last position reaches outputs at the first
    positions through the reshape alone when every position attends only to itself-sized chunks."""
    torch.manual_seed(0)
    m = ReformerAttention(8, 4, n_buckets=10, lra_code=True).double().eval()
    x = torch.randn(1, 39, 8, dtype=torch.float64)  # Lp = 40, C = 4
    y = m(x, None)
    paper = ReformerAttention(8, 4, n_buckets=10, out_proj=False, max_length=39).double().eval()
    assert paper.out is None and not torch.allclose(y, paper(x, None))


# ---- BigBird: bigbird_attention.py -----------------------------------------------------------------------------------

def lra_block_rand_mask(m, wm, r, last_idx):  # get_block_rand_mask, lines 24-66 (numpy's global generator)
    rand_attn = np.zeros((m // wm - 2, r), dtype=np.int64)
    a = np.array(range(1, m // wm - 1))
    last = (m // wm) - 1
    if last_idx > 2 * wm:
        last = (last_idx // wm) - 1
    for i in range(1, m // wm - 1):
        start, end = i - 2, i
        if i == 1:
            rand_attn[i - 1] = np.random.permutation(a[2:last])[:r]
        elif i == 2:
            rand_attn[i - 1] = np.random.permutation(a[3:last])[:r]
        elif i == m // wm - 3:
            rand_attn[i - 1] = np.random.permutation(a[:last - 4])[:r]
        elif i == m // wm - 2:
            rand_attn[i - 1] = np.random.permutation(a[:last - 3])[:r]
        elif start > last:
            rand_attn[i - 1] = np.random.permutation(a[:last])[:r]
        elif end + 1 == last:
            rand_attn[i - 1] = np.random.permutation(a[:start])[:r]
        else:
            rand_attn[i - 1] = np.random.permutation(np.concatenate((a[:start], a[end + 1:last])))[:r]
    return rand_attn


def lra_bigbird_core(q, k, v, rand_attn, mask, wm, r):  # band_start_block_rand_multi_attention_pad, lines 130-314
    b, h, m, d = q.shape
    nb = m // wm
    bq, bk, bv = (t.reshape(b, h, nb, wm, d) for t in (q, k, v))
    gk = np.stack([[bk[i, j][rand_attn[j]] for j in range(h)] for i in range(b)]).reshape(b, h, nb - 2, r * wm, d)
    gv = np.stack([[bv[i, j][rand_attn[j]] for j in range(h)] for i in range(b)]).reshape(b, h, nb - 2, r * wm, d)
    blocked = mask.reshape(b, nb, wm)
    exp_to = np.concatenate([blocked[:, 1:-3], blocked[:, 2:-2], blocked[:, 3:-1]], 2)
    band_pad = np.einsum("BLQ,BLK->BLQK", blocked[:, 2:-2], exp_to)[:, None]
    rand_pad = np.stack([blocked[i][rand_attn] for i in range(b)]).reshape(b, h, nb - 2, -1)
    rand_pad = np.einsum("BLQ,BHLK->BHLQK", blocked[:, 1:-1], rand_pad)
    seq_m_pad, seq_n_pad = mask.reshape(b, 1, m, 1), mask.reshape(b, 1, 1, m)
    sm = lambda t: flax_softmax(t, None)  # noqa: E731  (the -10000 biases are additive, underflow to 0)

    first = sm(np.einsum("BHQD,BHKD->BHQK", bq[:, :, 0], k) / np.sqrt(d) + (1.0 - seq_n_pad) * -10000.0) @ v
    second_k = np.concatenate([bk[:, :, 0], bk[:, :, 1], bk[:, :, 2], bk[:, :, -1], gk[:, :, 0]], 2)
    second_v = np.concatenate([bv[:, :, 0], bv[:, :, 1], bv[:, :, 2], bv[:, :, -1], gv[:, :, 0]], 2)
    second_seq = np.concatenate([seq_n_pad[..., :3 * wm], seq_n_pad[..., -wm:], np.ones([b, 1, 1, r * wm])], 3)
    second_rand = np.concatenate([np.ones([b, h, wm, 4 * wm]), rand_pad[:, :, 0]], 3)
    second = sm(np.einsum("BHQD,BHKD->BHQK", bq[:, :, 1], second_k) / np.sqrt(d)
                + (1.0 - np.minimum(second_seq, second_rand)) * -10000.0) @ second_v
    exp_k = np.concatenate([bk[:, :, 1:-3], bk[:, :, 2:-2], bk[:, :, 3:-1]], 3)
    exp_v = np.concatenate([bv[:, :, 1:-3], bv[:, :, 2:-2], bv[:, :, 3:-1]], 3)
    mq = bq[:, :, 2:-2]
    inner = np.einsum("BHLQD,BHLKD->BHLQK", mq, exp_k) / np.sqrt(d) + (1.0 - band_pad) * -10000.0
    rand = np.einsum("BHLQD,BHLKD->BHLQK", mq, gk[:, :, 1:-1]) / np.sqrt(d) + (1.0 - rand_pad[:, :, 1:-1]) * -10000.0
    first_band = (np.einsum("BHLQD,BHKD->BHLQK", mq, bk[:, :, 0]) / np.sqrt(d)
                  + (1.0 - seq_n_pad[..., :wm][:, :, :, None]) * -10000.0)
    last_band = (np.einsum("BHLQD,BHKD->BHLQK", mq, bk[:, :, -1]) / np.sqrt(d)
                 + (1.0 - seq_n_pad[..., -wm:][:, :, :, None]) * -10000.0)
    w = sm(np.concatenate([first_band, inner, rand, last_band], -1))
    middle = (np.einsum("BHLQK,BHLKD->BHLQD", w[..., wm:4 * wm], exp_v)
              + np.einsum("BHLQK,BHLKD->BHLQD", w[..., 4 * wm:-wm], gv[:, :, 1:-1])
              + np.einsum("BHLQK,BHKD->BHLQD", w[..., :wm], bv[:, :, 0])
              + np.einsum("BHLQK,BHKD->BHLQD", w[..., -wm:], bv[:, :, -1]))
    sl_k = np.concatenate([bk[:, :, 0], bk[:, :, -3], bk[:, :, -2], bk[:, :, -1], gk[:, :, -1]], 2)
    sl_v = np.concatenate([bv[:, :, 0], bv[:, :, -3], bv[:, :, -2], bv[:, :, -1], gv[:, :, -1]], 2)
    sl_seq = np.concatenate([seq_n_pad[..., :wm], seq_n_pad[..., -3 * wm:], np.ones([b, 1, 1, r * wm])], 3)
    sl_rand = np.concatenate([np.ones([b, h, wm, 4 * wm]), rand_pad[:, :, -1]], 3)
    second_last = sm(np.einsum("BHQD,BHKD->BHQK", bq[:, :, -2], sl_k) / np.sqrt(d)
                     + (1.0 - np.minimum(sl_seq, sl_rand)) * -10000.0) @ sl_v
    last = sm(np.einsum("BHQD,BHKD->BHQK", bq[:, :, -1], k) / np.sqrt(d) + (1.0 - seq_n_pad) * -10000.0) @ v
    ctx = np.concatenate([first[:, :, None], second[:, :, None], middle, second_last[:, :, None], last[:, :, None]], 2)
    return np.transpose(ctx.reshape(b, h, m, -1) * seq_m_pad, (0, 2, 1, 3))


def lra_bigbird(x, mask, m: BigBirdAttention, seed: int):  # BigBirdAttention.apply (lines 482-656), sparse path
    B, L, D = x.shape
    H, wm, r = m.n_heads, m.block_size, m.num_rand_blocks
    extra = wm - L % wm
    mask = np.pad(mask[..., None], ((0, 0), (0, extra), (0, 0)), constant_values=-1e9).astype(bool)  # line 487
    x = np.pad(x, ((0, 0), (0, extra), (0, 0)))
    q, k, v = (np.einsum("bld,dhe->bhle", x, dense_general_in(p.weight, H)) for p in (m.query, m.key, m.value))
    seq = x.shape[1]
    np.random.seed(seed)  # sparse_dot_product_attention, lines 366-376
    rand_attn = np.stack([lra_block_rand_mask(seq, wm, r, min(seq, 1024)) for _ in range(H)])
    ctx = lra_bigbird_core(q, k, v, rand_attn, mask[..., 0].astype(np.float64), wm, r)
    return np.einsum("blhe,hed->bld", ctx, dense_general_out(m.out.weight, H))[:, :L]


@pytest.mark.parametrize("length, layer", [(50, 0), (56, 3)])
def test_bigbird_lra_code_is_lras_code(length: int, layer: int) -> None:
    """L = 50: 6 pad positions appended; L = 56: a whole block of them (attended, as LRA's -1e9 mask makes them)."""
    torch.manual_seed(0)
    m = BigBirdAttention(16, 2, max_length=length, block_size=8, num_rand_blocks=2, lra_code=True,
                         layer_index=layer).double().eval()
    assert m.seed == layer  # LRA: connectivity_seed=lyr
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[0, 20:26] = False
    mask[1, length - 17:] = False
    ref = lra_bigbird(as_np(x), as_np(mask), m, seed=layer)
    torch.testing.assert_close(m(x, mask), torch.from_numpy(ref), **TOL)


def test_bigbird_default_masks_the_appended_pad_block_lra_code_attends_it() -> None:
    torch.manual_seed(0)
    lra = BigBirdAttention(16, 2, max_length=48, block_size=8, num_rand_blocks=1, lra_code=True, layer_index=0)
    paper = BigBirdAttention(16, 2, max_length=48, block_size=8, num_rand_blocks=1, seed=0)
    paper.load_state_dict(lra.state_dict())
    x = torch.randn(1, 48, 16)
    assert not torch.allclose(lra(x, None), paper(x, None))  # the 8 appended zero keys take weight in LRA's code


# ---- Local: local_attention.py ---------------------------------------------------------------------------------------

def lra_local(x, mask, m: LocalAttention):  # LocalAttention.apply, lines 226-415, attention_axis=(1,)
    B, L, D = x.shape
    H, T = m.n_heads, m.block_size
    extra = T - L % T
    x = np.pad(x, ((0, 0), (0, extra), (0, 0)))
    pm = np.pad(mask[..., None], ((0, 0), (0, extra), (0, 0)), constant_values=-1e9).astype(bool)  # line 237
    Lp = x.shape[1]
    S = Lp // T
    q, k, v = (np.einsum("bld,dhe->blhe", x, W) for W in fused(m.qkv, H))
    bq, bk, bv = (t.reshape(B, T, S, H, -1) for t in (q, k, v))  # lines 318-323
    pmask = make_padding_mask(pm.reshape(B * S, T, 1), pm.reshape(B * S, T, 1)).reshape(B, S, T, T)  # 342-355
    # local_dot_product_attention: batch dims (B, S, H), attention over axis 1; bias[:, :, None]
    scores = np.einsum("bqshe,bkshe->bshqk", bq / np.sqrt(bq.shape[-1]), bk)
    w = flax_softmax(scores, pmask[:, :, None])
    y = np.einsum("bshqk,bkshe->bqshe", w, bv).reshape(B, Lp, H, -1)  # line 399
    return np.einsum("blhe,hed->bld", y, dense_general_out(m.out.weight, H))[:, :L]


@pytest.mark.parametrize("length", [37, 40])
def test_local_lra_code_is_lras_code(length: int) -> None:
    torch.manual_seed(0)
    m = LocalAttention(16, 2, block_size=5, lra_code=True).double().eval()
    x = torch.randn(2, length, 16, dtype=torch.float64)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[0, [3, 11, 12, 30]] = False  # holes (black pixels)
    mask[1, length - 13:] = False
    torch.testing.assert_close(m(x, mask), torch.from_numpy(lra_local(as_np(x), as_np(mask), m)), **TOL)
    torch.testing.assert_close(m(x, None), torch.from_numpy(lra_local(as_np(x), np.ones((2, length), bool), m)), **TOL)


# ---- Sinkhorn: sinkhorn_attention.py ---------------------------------------------------------------------------------

def lra_sinkhorn_operator(log_alpha):  # lines 34-64, n_iters=1, temp=1, clip=1, causal=False
    n = log_alpha.shape[1]
    log_alpha = log_alpha.reshape(-1, n, n)
    lse = lambda a, ax: np.log(np.exp(a).sum(ax, keepdims=True))  # noqa: E731
    log_alpha = log_alpha - lse(log_alpha, 2)
    log_alpha = log_alpha - lse(log_alpha, 1)
    return np.exp(np.clip(log_alpha, -1.0, 1.0))


def lra_sinkhorn(x, mask, m: SinkhornAttention):  # SinkhornAttention.apply, lines 265-508
    B, L, D = x.shape
    H, b, M = m.n_heads, m.block_size, m.max_num_blocks
    N = L // b
    q, k, v = (np.einsum("bld,dhe->blhe", x, W) for W in fused(m.qkv, H))
    bq, bk, bv = (t.reshape(B, b, N, H, -1) for t in (q, k, v))  # lines 343-348
    sum_key = bk.sum(1)
    sort_out = np.einsum("bnhe,em->bnhm", sum_key, as_np(m.sort_net.weight).T)[..., :N]  # lines 358-366
    if m.sort_activation == "sinkhorn":
        perm = lra_sinkhorn_operator(sort_out.reshape(-1, N, N)).reshape(-1, N, H, N)
    else:
        perm = np.exp(sort_out - sort_out.max(-1, keepdims=True))
        perm = perm / perm.sum(-1, keepdims=True)
    sorted_key = np.einsum("bskhd,bnhl->bsnhd", bk, perm)  # lines 382-383
    sorted_value = np.einsum("bskhd,bnhl->bsnhd", bv, perm)
    bias = sorted_bias = None
    if mask is not None:
        pm = mask[..., None].astype(np.float64)
        pmask = make_padding_mask(pm.reshape(B * N, b, 1), pm.reshape(B * N, b, 1)).reshape(B, N, b, b)
        bias = pmask[:, :, None]
        sorted_bias = (np.einsum("bksj,bnhl->bnsj", pmask.astype(np.float64), perm) > 0)[:, :, None]  # line 418

    def attend(keys, values, allowed):  # local_dot_product_attention over axis 1, batch dims (B, N, H)
        scores = np.einsum("bqnhe,bknhe->bnhqk", bq / np.sqrt(bq.shape[-1]), keys)
        return np.einsum("bnhqk,bknhe->bqnhe", flax_softmax(scores, allowed), values)

    y = (attend(bk, bv, bias) + attend(sorted_key, sorted_value, sorted_bias)).reshape(B, L, H, -1)  # 492-494
    return np.einsum("blhe,hed->bld", y, dense_general_out(m.out.weight, H))


@pytest.mark.parametrize("activation", ["softmax", "sinkhorn"])
def test_sinkhorn_lra_code_is_lras_code(activation: str) -> None:
    torch.manual_seed(0)
    m = SinkhornAttention(16, 2, block_size=5, max_num_blocks=8 if activation == "softmax" else 6,
                          sort_activation=activation, lra_code=True).double().eval()
    x = torch.randn(2, 30, 16, dtype=torch.float64)  # N = 6 strided blocks
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, [2, 7, 8, 9, 10, 21]] = False  # chunk 2 (positions 10-14) keeps one real position
    mask[1, 12:] = False
    torch.testing.assert_close(m(x, mask), torch.from_numpy(lra_sinkhorn(as_np(x), as_np(mask), m)), **TOL)
    torch.testing.assert_close(m(x, None), torch.from_numpy(lra_sinkhorn(as_np(x), None, m)), **TOL)


def test_sinkhorn_lra_code_sort_net_is_inert_and_needs_whole_blocks() -> None:
    torch.manual_seed(0)
    m = SinkhornAttention(16, 2, block_size=5, max_num_blocks=8, lra_code=True).double()
    m(torch.randn(2, 30, 16, dtype=torch.float64), None).square().sum().backward()
    # (sum_k K_k)(sum_l P_nl): P's rows sum to 1, so the sort net's gradient is rounding only
    assert m.sort_net.weight.grad.abs().max() < 1e-10 < m.qkv.weight.grad.abs().max()
    with pytest.raises(ValueError, match="multiple of block_size"):
        m(torch.randn(1, 31, 16, dtype=torch.float64), None)


# ---- Synthesizer: synthesizer_attention.py ---------------------------------------------------------------------------

def lra_synthesizer(x, mask, m: SynthesizerAttention, mode: str, ignore_dot_product: bool):  # lines 270-446
    B, L, D = x.shape
    H = m.n_heads
    value = np.einsum("bld,dhe->blhe", x, dense_general_in(m.value.weight, H))
    syn = []
    if "random" in mode:
        syn.append(np.broadcast_to(as_np(m.R)[:, :L, :L], (B, H, L, L)))
    if "dense" in mode:
        proj = np.maximum(np.einsum("bld,dhe->blhe", x, dense_general_in(m.W1.weight, H)), 0.0)
        proj = np.einsum("blhe,em->blhm", proj, as_np(m.W2.weight).T)
        syn.append(proj.reshape(B, H, L, m.max_length)[..., :L])  # lines 332-335, no transpose
    weights = sum(syn)
    allowed = None
    if not ignore_dot_product:
        query = np.einsum("bld,dhe->blhe", x, dense_general_in(m.query.weight, H))
        key = np.einsum("bld,dhe->blhe", x, dense_general_in(m.key.weight, H))
        weights = weights + np.einsum("bqhe,bkhe->bhqk", query / np.sqrt(query.shape[-1]), key)
        pm = mask[..., None].astype(np.float64)
        allowed = make_padding_mask(pm, pm)  # (B, 1, L, L), lines 390-400
    return np.einsum("blhe,hed->bld", np.einsum("bhqk,bkhe->bqhe", flax_softmax(weights, allowed), value),
                     dense_general_out(m.out.weight, H))


@pytest.mark.parametrize("mode, ignore_dot_product", [("random", False), ("dense", False), ("dense+random", True)])
def test_synthesizer_lra_code_is_lras_code(mode: str, ignore_dot_product: bool) -> None:
    torch.manual_seed(0)
    m = SynthesizerAttention(16, 2, max_length=24, mode=mode, ignore_dot_product=ignore_dot_product,
                             lra_code=True).double().eval()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, [4, 5]] = False
    mask[1, 13:] = False
    ref = lra_synthesizer(as_np(x), as_np(mask), m, mode, ignore_dot_product)
    torch.testing.assert_close(m(x, mask), torch.from_numpy(ref), **TOL)


# ---- Linformer: linformer_attention.py -------------------------------------------------------------------------------

def lra_linformer(x, m: LinformerAttention):  # LinformerAttention.apply, lines 113-178 (padding_mask never used)
    B, L, D = x.shape
    H = m.n_heads
    q, k, v = (np.einsum("bld,dhe->blhe", x, dense_general_in(p.weight, H)) for p in (m.query, m.key, m.value))
    kernel = as_np(m.E).T  # lr_kernel (max_len, low_rank_features)

    def low_rank_projection(t):  # lines 127-137
        t = t.transpose((0, 3, 2, 1))  # (B, E, H, L)
        return np.einsum("behl,lk->behk", t, kernel[:L]).transpose((0, 3, 2, 1))  # (B, k, H, E)

    k, v = low_rank_projection(k), low_rank_projection(v)
    w = flax_softmax(np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(q.shape[-1]), k), None)  # bias=None (line 159)
    y = np.einsum("bhqk,bkhe->bqhe", w, v)
    return np.einsum("blhe,hed->bld", y, dense_general_out(m.out.weight, H))


def lra_masks(B: int, L: int) -> torch.Tensor:
    """LRA's ``inputs > 0``: holes (black pixels) in row 0, a padded tail in row 1."""
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, [1, 4, 5, L - 3]] = False
    mask[1, L - 7:] = False
    return mask


def test_linformer_lra_code_is_lras_code_and_ignores_the_mask() -> None:
    torch.manual_seed(0)
    m = LinformerAttention(16, 2, max_length=24, k=6, lra_code=True).double().eval()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    ref = torch.from_numpy(lra_linformer(as_np(x), m))
    torch.testing.assert_close(m(x, lra_masks(2, 20)), ref, **TOL)
    torch.testing.assert_close(m(x, None), ref, **TOL)
    paper = LinformerAttention(16, 2, max_length=24, k=6).double().eval()
    paper.load_state_dict(m.state_dict())
    assert not torch.allclose(paper(x, lra_masks(2, 20)), ref)  # the default keeps masked keys out


# ---- Linear Transformer: linear_attention.py -------------------------------------------------------------------------

def lra_linear(x, m: LinearAttention):  # LinearAttention.apply, lines 137-195, linear_attention lines 63-72
    H = m.n_heads
    q, k, v = (np.einsum("bld,dhe->blhe", x, W) for W in fused(m.qkv, H))
    elu1 = lambda t: np.where(t > 0, t, np.expm1(t)) + 1  # noqa: E731  nn.elu(x) + 1
    qm, km = elu1(q), elu1(k)
    kv = np.einsum("nshd,nshm->nhmd", km, v)
    z = 1 / (np.einsum("nlhd,nhd->nlh", qm, km.sum(1)) + 1e-6)
    y = np.einsum("nlhd,nhmd,nlh->nlhm", qm, kv, z)
    return np.einsum("blhe,hed->bld", y, dense_general_out(m.out.weight, H))


def test_linear_attention_lra_code_is_lras_code_and_ignores_the_mask() -> None:
    torch.manual_seed(0)
    m = LinearAttention(16, 2, lra_code=True).double().eval()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    ref = torch.from_numpy(lra_linear(as_np(x), m))
    torch.testing.assert_close(m(x, lra_masks(2, 20)), ref, **TOL)
    paper = LinearAttention(16, 2).double().eval()
    paper.load_state_dict(m.state_dict())
    assert not torch.allclose(paper(x, lra_masks(2, 20)), ref)


# ---- Performer: performer_attention.py -------------------------------------------------------------------------------

def lra_gaussian_orthogonal(M: int, E: int, normal) -> np.ndarray:  # GaussianOrthogonalRandomMatrix, lines 349-377
    blocks = []
    for _ in range(M // E):
        q, _ = np.linalg.qr(normal((E, E)))  # Q as QR returns it: no sign fix
        blocks.append(q.T)
    if M % E:
        q, _ = np.linalg.qr(normal((E, E)))
        blocks.append(q.T[: M % E])
    multiplier = np.linalg.norm(normal((M, E)), axis=1)  # scaling == 0
    return np.diag(multiplier) @ np.vstack(blocks)


def lra_performer(x, m: PerformerAttention):
    """flax SelfAttention's projections around FastAttentionviaLowRankDecomposition.dot_product_attention (lines
    550-705, bidirectional, renormalised; ``bias``, the padding mask, unused). Returns (output, W)."""
    H = m.n_heads
    q, k, v = (np.einsum("bld,dhe->bhle", x, W) for W in fused(m.qkv, H))  # qk_perm: (B, H, L, E)
    E = q.shape[-1]
    W = None
    if m.features != "deterministic":  # redraw_features: PRNGKey(int32(ceil(sum(query) * 1e7))), lines 579-584
        seed = int(np.clip(np.ceil(q.sum() * 1e7), -(2**31), 2**31 - 1))
        g = torch.Generator().manual_seed(seed)  # torch's draws in JAX's order (JAX's values are not reproduced)
        W = lra_gaussian_orthogonal(m.projection.size(0), E,
                                    lambda shape: torch.randn(*shape, generator=g, dtype=torch.float64).numpy())
    if m.kernel == "softmax":  # nonnegative_softmax_kernel_feature_creator, lines 75-108
        eps, normalizer, ratio = m.feature_eps, E ** -0.25, W.shape[0] ** -0.5

        def features(t, is_query):
            dash = np.einsum("bhle,me->bhlm", normalizer * t, W)
            diag = (np.square(t).sum(-1, keepdims=True) / 2.0) * normalizer * normalizer
            top = dash.max(-1, keepdims=True) if is_query else dash.max((-1, -2), keepdims=True)
            return ratio * (np.exp(dash - diag - top) + eps)

        qp, kp = features(q, True), features(k, False)
    else:  # generalized_kernel_feature_creator, deterministic: relu(x) + kernel_epsilon, lines 181-186
        qp, kp = np.maximum(q, 0) + m.feature_eps, np.maximum(k, 0) + m.feature_eps
    num = np.einsum("bhlm,bhme->bhle", qp, np.einsum("bhlm,bhle->bhme", kp, v))
    R = np.einsum("bhlm,bhm->bhl", qp, kp.sum(2))
    R = R + 2 * m.stabilizer * (np.abs(R) <= m.stabilizer)
    y = num * (1.0 / R)[..., None]
    return np.einsum("bhle,hed->bld", y, dense_general_out(m.out.weight, H)), W


@pytest.mark.parametrize("kernel, n_features", [("softmax", 2), ("softmax", 12), ("relu", None)])
def test_performer_lra_code_is_lras_code(kernel: str, n_features: int | None) -> None:
    """ListOps' FAVOR+ (2 features < E = 8; 12: a full block and 4 rows) redrawn at every call, eval too, from the
    queries' seed, Q unfixed; the other tasks' relu kernel. The mask is ignored."""
    torch.manual_seed(0)
    kw = dict(kernel="softmax", features="ortho", n_features=n_features, redraw=True, feature_eps=1e-6,
              stabilizer=1e-6) if kernel == "softmax" else {}
    m = PerformerAttention(16, 2, lra_code=True, **kw).double().eval()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    ref, W = lra_performer(as_np(x), m)
    torch.testing.assert_close(m(x, lra_masks(2, 20)), torch.from_numpy(ref), **TOL)
    if W is not None:
        torch.testing.assert_close(m.projection, torch.from_numpy(W), **TOL)
        other = m(x[:, :, torch.randperm(16)], None)  # other queries: another seed, another W
        assert not torch.allclose(m.projection, torch.from_numpy(W))
        m.train()
        torch.testing.assert_close(m(x, None), torch.from_numpy(ref), **TOL)  # the same draw in training
        assert other.shape == x.shape


def test_performer_default_fixes_qr_signs_lra_code_does_not() -> None:
    """LAPACK's Householder QR gives Q[0, 0] < 0 always (r_11 = -sign(a_11)|a_1|): LRA's first rows all start with a
    negative entry before the chi rescaling; the default's sign fix makes them symmetric."""
    from lra_bench.models.attention.performer import haar_orthogonal

    torch.manual_seed(0)
    lra = torch.stack([haar_orthogonal(4, sign_fix=False)[0, 0] for _ in range(200)])
    fixed = torch.stack([haar_orthogonal(4)[0, 0] for _ in range(200)])
    assert (lra < 0).all() and 50 < int((fixed < 0).sum()) < 150


# ---- Longformer: longformer_attention.py -----------------------------------------------------------------------------

def lra_longformer(x, mask, m: LongformerAttention):  # LongformerAttention.apply, lines 203-287, global_mask None
    B, L, D = x.shape
    H = m.n_heads
    q, k, v = (np.einsum("bld,dhe->blhe", x, W) for W in fused(m.qkv, H))  # the *_sliding_window projections
    right = m.window_size // 2
    left = m.window_size - right
    band = sum(np.eye(L, k=-i) for i in range(left)) + sum(np.eye(L, k=i) for i in range(1, right + 1))  # 59-66
    pm = mask[..., None].astype(np.float64)
    allowed = (band[None, None] > 0) & make_padding_mask(pm, pm)  # lines 96-105, 119-128
    w = flax_softmax(np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(q.shape[-1]), k), allowed)
    y = np.einsum("bhqk,bkhe->bqhe", w, v)  # x_sw: no position is global (line 273)
    return np.einsum("blhe,hed->bld", y, dense_general_out(m.out.weight, H))


@pytest.mark.parametrize("window", [5, 6])
def test_longformer_lra_code_is_lras_code_pads_included(window: int) -> None:
    """Every position, pads too (LRA's mean pooling counts them): a masked query averages all values."""
    torch.manual_seed(0)
    m = LongformerAttention(16, 2, window_size=window, lra_code=True).double().eval()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    tail_only = torch.ones(2, 23, dtype=torch.bool)
    tail_only[1, 16:] = False  # text: pads only, no holes
    for mask in (lra_masks(2, 23), tail_only):
        torch.testing.assert_close(m(x, mask), torch.from_numpy(lra_longformer(as_np(x), as_np(mask), m)), **TOL)
    with pytest.raises(ValueError, match="passes no global_mask"):
        LongformerAttention(16, 2, n_global=1, lra_code=True)


# ---- Sparse Transformer: sparse_attention.py -------------------------------------------------------------------------

def lra_sparse_mask(n: int, block_size: int, c: int) -> np.ndarray:  # build_mask, lines 63-95, Fixed1 | Fixed2
    r = np.arange(n)
    q, k = r[:, None], r[None, :]
    fixed1 = (q // block_size == k // block_size) & (k <= q)
    rem = np.remainder(k, block_size)
    fixed2 = ((rem == 0) | (rem >= block_size - c)) & (k <= q)
    return fixed1 | fixed2


def lra_sparse(x, mask, m: SparseAttention):  # SparseAttention.apply, lines 153-263
    B, L, D = x.shape
    H = m.n_heads
    q, k, v = (np.einsum("bld,dhe->blhe", x, W) for W in fused(m.qkv, H))
    if m.cls_token:  # lines 185-191: the pattern over L - 1 positions, row and column 0 all True
        sparse = np.pad(lra_sparse_mask(L - 1, m.block_size, m.c), ((1, 0), (1, 0)), constant_values=True)
    else:
        sparse = lra_sparse_mask(L, m.block_size, m.c)
    pm = mask[..., None].astype(np.float64)
    allowed = sparse[None, None] & make_padding_mask(pm, pm)
    w = flax_softmax(np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(q.shape[-1]), k), allowed)
    return np.einsum("blhe,hed->bld", np.einsum("bhqk,bkhe->bqhe", w, v), dense_general_out(m.out.weight, H))


@pytest.mark.parametrize("cls_token", [False, True])
def test_sparse_attention_is_lras_code_pads_included(cls_token: bool) -> None:
    """Under LRA's input pipeline (``inputs > 0``, pads counted by the pooling) the one mechanism is LRA's."""
    torch.manual_seed(0)
    m = SparseAttention(16, 2, block_size=5, c=2, cls_token=cls_token).double().eval()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    tail_only = torch.ones(2, 23, dtype=torch.bool)
    tail_only[1, 16:] = False
    for mask in (lra_masks(2, 23), tail_only):
        torch.testing.assert_close(m(x, mask), torch.from_numpy(lra_sparse(as_np(x), as_np(mask), m)), **TOL)


# ---- Transformer: flax nn.SelfAttention with make_attention_mask ------------------------------------------------------

def test_softmax_attention_with_lras_mask_is_flax_self_attention() -> None:
    torch.manual_seed(0)
    m = SoftmaxAttention(16, 4, impl="vanilla").double().eval()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, [0, 5, 6]] = False  # black pixels (CLS inherits pixel 0's)
    mask[1, 8:] = False
    H = 4
    q, k, v = (np.einsum("bld,dhe->blhe", as_np(x), W) for W in fused(m.qkv, H))
    pm = as_np(mask)[..., None].astype(np.float64)
    w = flax_softmax(np.einsum("bqhe,bkhe->bhqk", q / 2.0, k), make_padding_mask(pm, pm))
    ref = np.einsum("blhe,hed->bld", np.einsum("bhqk,bkhe->bqhe", w, v), dense_general_out(m.out.weight, H))
    torch.testing.assert_close(m(x, mask), torch.from_numpy(ref), **TOL)


# ---- the input pipeline and pooling: models/<model>/<model>.py, layers/common_layers.py ------------------------------

def classifier(lra_code: bool, pooling: str = "mean") -> SequenceClassifier:
    torch.manual_seed(0)
    backbone = TransformerEncoder(16, 1, 2, 32, dropout=0.0, attn_dropout=0.0, max_length=12, positions="learned",
                                  lra_code=lra_code)
    return SequenceClassifier(backbone, 16, 3, vocab_size=20, padding_idx=0, pooling=pooling, head_hidden=8,
                              lra_code=lra_code).double().eval()


def test_lra_code_classifier_pads_to_the_task_length_masks_zeros_and_means_over_every_position() -> None:
    net = classifier(lra_code=True)
    assert net.embedding.padding_idx is None  # LRA's nn.Embed trains id 0's row too
    tokens = torch.tensor([[5, 3, 0, 7, 2, 0, 0], [4, 4, 9, 1, 0, 0, 0]])
    lengths = torch.tensor([5, 4])
    with torch.no_grad():
        padded = torch.nn.functional.pad(tokens, (0, 5))  # to 12, LRA's fixed length
        encoded = net.backbone(net.embedding(padded).double(), torch.full((2,), 12), token_mask=padded > 0)
        torch.testing.assert_close(net.encode(tokens, lengths), encoded.mean(1), **TOL)  # jnp.mean(encoded, axis=1)
        # a different batch width (or the true lengths) changes nothing: every row is LRA's 12 positions
        torch.testing.assert_close(net.encode(tokens[:, :5], torch.tensor([5, 5])), encoded.mean(1), **TOL)
    default = classifier(lra_code=False)
    with torch.no_grad():
        real = default.backbone(default.embedding(tokens).double(), lengths)
        torch.testing.assert_close(default.encode(tokens, lengths), real.sum(1) / lengths[:, None], **TOL)


class OwnBackbone(torch.nn.Module):
    """A user's backbone (the protocol's minimum): no token_mask, so not one of LRA's models."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x


def test_lra_code_refuses_a_backbone_lra_never_ran() -> None:
    with pytest.raises(ValueError, match="OwnBackbone is not one of them: set lra_code=false"):
        SequenceClassifier(OwnBackbone(), 16, 3, vocab_size=20, lra_code=True)


# ---- the block, embedding and head: models/transformer/transformer.py, layers/common_layers.py -----------------------

def flax_layer_norm(x, norm: torch.nn.LayerNorm) -> np.ndarray:  # flax.deprecated.nn.LayerNorm, epsilon 1e-6
    mean = x.mean(-1, keepdims=True)
    var = np.square(x).mean(-1, keepdims=True) - np.square(mean)
    return (x - mean) / np.sqrt(var + 1e-6) * as_np(norm.weight) + as_np(norm.bias)


def flax_gelu(x):  # nn.gelu = jax.nn.gelu, approximate=True
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def dense(x, linear: torch.nn.Linear):
    return x @ as_np(linear.weight).T + (0.0 if linear.bias is None else as_np(linear.bias))


def lra_encode(tokens, net: SequenceClassifier, cls: bool):  # TransformerEncoder.apply, lines 145-214, deterministic
    bb = net.backbone
    pm = (tokens > 0)[..., None]  # line 148
    x = as_np(net.embedding.weight)[tokens]  # nn.Embed
    if cls:  # lines 161-167
        x = np.concatenate([np.broadcast_to(as_np(net.cls), (x.shape[0], 1, x.shape[2])), x], axis=1)
        pm = np.concatenate([pm[:, :1], pm], axis=1)
    x = x + as_np(bb.positions.table)[: x.shape[1]]  # AddPositionEmbs, learned (posembed_input)
    pmf = pm.astype(np.float64)
    for layer in bb.layers:  # TransformerBlock, lines 57-88
        h = flax_layer_norm(x, layer.norm1)
        H = layer.attn.n_heads
        q, k, v = (np.einsum("bld,dhe->blhe", h, W) for W in fused(layer.attn.qkv, H))
        w = flax_softmax(np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(q.shape[-1]), k), make_padding_mask(pmf, pmf))
        y = np.einsum("bhqk,bkhe->bqhe", w, v)
        x = x + np.einsum("blhe,hed->bld", y, dense_general_out(layer.attn.out.weight, H))
        y = flax_layer_norm(x, layer.norm2)
        x = x + dense(flax_gelu(dense(y, layer.mlp[0])), layer.mlp[3])  # MlpBlock, common_layers.py:154-163
    encoded = flax_layer_norm(x, bb.final_norm)  # encoder_norm
    return encoded[:, 0] if cls else encoded.mean(1)  # classifier_head pooling, common_layers.py:181-188


def lra_head(pooled, net: SequenceClassifier):  # classifier_head / classifier_head_dual: Dense -> relu ... -> logits
    dense_layers = [m for m in net.head.net if isinstance(m, torch.nn.Linear)]
    for linear in dense_layers[:-1]:
        pooled = np.maximum(dense(pooled, linear), 0.0)
    return dense(pooled, dense_layers[-1])


def lra_block_classifier(pooling: str, pair: bool = False) -> SequenceClassifier:
    torch.manual_seed(0)
    backbone = TransformerEncoder(16, 2, 2, 32, d_qkv=8, dropout=0.0, attn_dropout=0.0, max_length=13,
                                  positions="learned", lra_code=True)
    return SequenceClassifier(backbone, 16, 3, vocab_size=20, pooling=pooling, head_hidden=[8, 4] if pair else 8,
                              head_activation="relu", pair=pair, lra_code=True).double().eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_lra_code_block_embedding_and_head_are_lras_encoder(pooling: str) -> None:
    """Embedding, CLS, positions, pre-LN blocks (flax LayerNorm eps 1e-6, tanh GELU), final norm, pooling, head:
    the whole classifier against LRA's TransformerEncoder + classifier_head, and the dual encoder's head."""
    tokens = torch.tensor([[5, 3, 0, 7, 2, 9], [0, 4, 9, 1, 0, 0]])  # a black first pixel: CLS inherits its mask
    lengths = torch.tensor([6, 4])
    net = lra_block_classifier(pooling)
    padded = np.pad(as_np(tokens), ((0, 0), (0, 13 - (pooling == "cls") - 6)))  # LRA's fixed length (max_len)
    ref = lra_head(lra_encode(padded, net, pooling == "cls"), net)
    with torch.no_grad():
        torch.testing.assert_close(net(tokens, lengths), torch.from_numpy(ref), **TOL)
    dual = lra_block_classifier("mean", pair=True)
    tokens2 = torch.tensor([[8, 8, 1], [2, 0, 3]])
    u = lra_encode(np.pad(as_np(tokens), ((0, 0), (0, 7))), dual, False)
    v = lra_encode(np.pad(as_np(tokens2), ((0, 0), (0, 10))), dual, False)
    with torch.no_grad():
        out = dual(tokens, lengths, tokens2, torch.tensor([3, 3]))
    torch.testing.assert_close(out, torch.from_numpy(lra_head(np.concatenate([u, v], 1), dual)), **TOL)


def test_lra_code_block_settings_and_inits_default_keeps_the_definitions() -> None:
    """lra_code: tanh GELU, eps 1e-6, MlpBlock xavier kernels with N(0, 1e-6) biases (common_layers.py:151-152),
    the head lecun-normal (flax nn.Dense's default, truncated at 2 sd). Default: exact GELU, eps 1e-5."""
    from lra_bench.models.classifier import ClassifierHead

    torch.manual_seed(0)
    lra = TransformerEncoder(64, 1, 2, 256, max_length=8, lra_code=True)
    paper = TransformerEncoder(64, 1, 2, 256, max_length=8)
    block, default = lra.layers[0], paper.layers[0]
    assert block.mlp[1].approximate == "tanh" and default.mlp[1].approximate == "none"
    assert {block.norm1.eps, block.norm2.eps, lra.final_norm.eps} == {1e-6}
    assert {default.norm1.eps, default.norm2.eps, paper.final_norm.eps} == {1e-5}
    for linear in (block.mlp[0], block.mlp[3]):
        bound = (6 / sum(linear.weight.shape)) ** 0.5
        assert 0.9 * bound < linear.weight.abs().max() <= bound
        assert 0 < linear.bias.abs().max() < 1e-5
    head = ClassifierHead(512, 10, 512, "relu", 0.0, True, lra_code=True).net[0]
    std = 512 ** -0.5
    assert head.weight.std().item() == pytest.approx(std, rel=0.02)
    assert head.weight.abs().max() <= 2 * std / 0.87962566103423978 and (head.bias == 0).all()


def test_sinusoidal_table_is_lras_float64_init() -> None:
    """LRA's sinusoidal_init computes the angles in float64 (numpy) and stores float32; float32 angles are off by
    up to ~2e-4 at position 4000."""
    from lra_bench.models.attention.transformer import sinusoidal_table

    max_len, d = 4097, 64
    position = np.arange(0, max_len)[:, np.newaxis]  # common_layers.py:64-75
    div_term = np.exp(np.arange(0, d, 2) * -(np.log(10000.0) / d))
    pe = np.zeros((max_len, d), dtype=np.float32)
    pe[:, 0::2] = np.sin(position * div_term)
    pe[:, 1::2] = np.cos(position * div_term)
    assert np.abs(as_np(sinusoidal_table(max_len, d)) - pe).max() <= 6e-8  # at most one float32 rounding apart
    f32 = (torch.arange(max_len, dtype=torch.float32)[:, None]
           * torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d)))
    assert np.abs(torch.sin(f32).numpy() - pe[:, 0::2]).max() > 1e-5


def test_lra_code_refuses_a_half_switched_model() -> None:
    with pytest.raises(ValueError, match="LinformerAttention has lra_code=True: build both from the one top-level"):
        TransformerEncoder(16, 1, 2, 32, max_length=8,
                           attention=lambda **kw: LinformerAttention(16, 2, max_length=8, lra_code=True))
    with pytest.raises(ValueError, match="TransformerEncoder.lra_code=False: build both"):
        SequenceClassifier(TransformerEncoder(16, 1, 2, 32, max_length=8), 16, 3, vocab_size=20, lra_code=True)
    with pytest.raises(ValueError, match="pre-LN with GELU"):
        TransformerEncoder(16, 1, 2, 32, max_length=8, prenorm=False, lra_code=True)


# ---- the schedule: utils/train_utils.py create_learning_rate_scheduler ------------------------------------------------

def lra_lr(step: int, base: float, warmup: int, steps_per_cycle: int) -> float:  # lines 124-147
    ret = base * min(1.0, step / warmup)
    progress = max(0.0, (step - warmup) / float(steps_per_cycle))
    return ret * max(0.0, 0.5 * (1.0 + math.cos(math.pi * (progress % 1.0))))


def test_lra_cosine_is_lras_cosine_decay_and_ends_near_6e_5() -> None:
    warmup, total = 45_000 // 256, (45_000 // 256) * 200  # image/configs/cifar10/base_cifar10_config.py
    for step in (0, 1, 100, warmup, warmup + 1, 10_000, total // 2, total - 1, total):
        assert lr_factor(step, total, warmup, "cosine", lra_cosine=True) == pytest.approx(
            lra_lr(step, 1.0, warmup, total), rel=1e-12, abs=1e-15)
    end = lr_factor(total, total, warmup, "cosine", lra_cosine=True)
    assert end == pytest.approx(0.5 * (1 - math.cos(math.pi * warmup / total))) and 6.0e-5 < end < 6.3e-5
    assert lr_factor(total, total, warmup, "cosine") == 0.0  # the default ends at final_factor


# ---- one switch: conf/train.yaml lra_code, every mechanism follows it, no preset mixes -------------------------------

QUIRK_KEYS = ("lra_code", "lra_cosine", "self_mask", "key_norm", "score_scale", "out_proj", "grouping", "lra_indexing",
              "mask_zero_inputs")  # what a preset must leave to the top-level switch


def test_no_preset_sets_an_option_of_the_switch() -> None:
    import re
    from pathlib import Path

    pattern = re.compile(rf"^\s*({'|'.join(QUIRK_KEYS)})\s*:", re.MULTILINE)
    presets = sorted(Path("conf/experiment").rglob("*.yaml"))
    assert len(presets) > 100
    offenders = [f"{p}: {m.group(1)}" for p in presets for m in pattern.finditer(p.read_text())]
    assert not offenders, offenders


@pytest.mark.parametrize("model", ["transformer", "reformer", "bigbird", "sinkhorn", "local", "synthesizer",
                                   "linformer", "performer", "linear_transformer", "longformer", "sparse_transformer"])
def test_every_mechanism_follows_the_one_switch(model: str) -> None:
    for switch in (False, True):
        cfg = compose_config([f"experiment=lra/{model}-image", f"lra_code={str(switch).lower()}",
                              "paths.output_dir=/tmp/lra_bench_presets"])
        assert cfg.model.net.lra_code is switch and cfg.scheduler.lra_cosine is switch
        assert cfg.model.net.backbone.lra_code is switch  # the block
        attention = cfg.model.net.backbone.attention
        if model not in ("transformer", "sparse_transformer"):  # softmax and Sparse compute the same either way
            assert attention.lra_code is switch


def test_lra_code_on_a_model_lra_never_ran_stops_with_one_line() -> None:
    from lra_bench.errors import ConfigError
    from lra_bench.training.options import check_options

    for model in ("mega", "s4", "luna"):
        cfg = compose_config([f"model={model}", "lra_code=true", "paths.output_dir=/tmp/lra_bench_presets"])
        with pytest.raises(ConfigError, match=f"model={model} is not one of them"):
            check_options(cfg)
    check_options(compose_config(["model=reformer", "lra_code=true", "paths.output_dir=/tmp/lra_bench_presets"]))


def test_report_marks_lra_code_runs() -> None:
    from lra_bench.reporting.tables import row_name, table_rows

    runs = [{"model": "transformer", "task": "listops", "seed": s, "test/acc": 0.37, "lra_code": s == 1,
             "experiment": "lra/transformer-listops", "overrides": ["experiment=lra/transformer-listops"]
             + (["lra_code=true"] if s == 1 else [])} for s in (0, 1)]
    rows = {(r["model"], r["lra_code"]): r for r in table_rows(runs)}
    assert set(rows) == {("transformer", False), ("transformer", True)}  # two rows, never pooled as seeds
    assert rows[("transformer", True)]["scale"] == "paper preset"
    assert row_name(rows[("transformer", True)], bold=False) == "transformer [LRA code]"


@pytest.mark.slow
def test_a_run_with_lra_code_trains_and_records_it_in_result_json(run_config) -> None:
    """A real (tiny) training run through lra_bench.train: LRA's padding to the task length, the mechanism's LRA
    path, LRA's cosine; result.json carries lra_code for the report's marker."""
    import json
    from pathlib import Path

    from lra_bench.train import train

    cfg = run_config("model=reformer", "lra_code=true", "scheduler.decay=cosine")
    result = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "result.json").read_text())
    assert saved["lra_code"] is True and result["lra_code"] is True and math.isfinite(saved["test/loss"])
