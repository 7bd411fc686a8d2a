"""Sparse Sinkhorn attention: the package's matching parts, the explicit formulas, padding, sparsity, presets."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from hydra.utils import instantiate

from lra_bench.benchmarks.references.sinkhorn import PackageSinkhornAttention, build, match_weights
from lra_bench.models.attention.sinkhorn import SinkhornAttention, route_blocks, sinkhorn
from lra_bench.models.attention.transformer import TransformerEncoder
from lra_bench.models.masks import length_mask
from tests.conftest import compose_config

D, H = 16, 2


def make(**options: object) -> SinkhornAttention:
    torch.manual_seed(0)
    return SinkhornAttention(D, H, D, 0.0, **options).double().eval()


def projections(attn: SinkhornAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v: (B, H, L, E) straight from the weights."""
    B, L, _ = x.shape
    return tuple(t.view(B, L, H, -1).transpose(1, 2) for t in (x @ attn.qkv.weight.T).chunk(3, dim=-1))


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(E)) v over the allowed keys; a row with none gives zeros. allowed: (..., Q, K) bool."""
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))).masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(scores.softmax(-1)) @ v


def explicit(attn: SinkhornAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The module docstring's equations, block by block, with softmax routing: (B, L, D)."""
    B, L, _ = x.shape
    b = attn.block_size
    N = -(-L // b)
    T = min(N, attn.max_num_blocks)
    real = torch.nn.functional.pad(mask, (0, N * b - L), value=False).view(B, N, b)
    q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, N * b - L)).view(B, H, N, b, -1) for t in projections(attn, x))
    k, v = k * real[:, None, ..., None], v * real[:, None, ..., None]
    y = torch.zeros_like(q)
    for i in range(B):
        targets = real[i, :T].any(-1)
        for h in range(H):
            R = k[i, h].sum(1) @ attn.sort_net.weight[:T].T / attn.temperature  # (N, T)
            P = R.masked_fill(~targets, float("-inf")).softmax(-1)
            for n in range(N):
                k_sorted = sum(P[n, m] * k[i, h, m] for m in range(T))
                v_sorted = sum(P[n, m] * v[i, h, m] for m in range(T))
                sorted_real = sum(P[n, m] * real[i, m] for m in range(T)) > 0
                y[i, h, n] = softmax_attention(q[i, h, n], k_sorted, v_sorted, sorted_real.expand(b, b))
                if attn.local:
                    y[i, h, n] += softmax_attention(q[i, h, n], k[i, h, n], v[i, h, n], real[i, n].expand(b, b))
    return attn.out(y.view(B, H, N * b, -1).transpose(1, 2).reshape(B, N * b, -1)[:, :L])


def random_mask(B: int, L: int) -> torch.Tensor:
    """Right padding of different lengths plus a hole (a masked real position, as a black pixel)."""
    mask = length_mask(torch.tensor([L, L - 7, L - 3][:B]), L)
    mask[0, 4] = False
    return mask


# --- the sinkhorn-transformer package (0.11.4): the parts whose math is the same ---------------------------------


@pytest.mark.parametrize("n_iters", [1, 3, 8])
def test_sinkhorn_balancing_matches_the_package_operator(n_iters: int) -> None:
    from sinkhorn_transformer.sinkhorn_transformer import sinkhorn_sorting_operator

    r = torch.randn(4, 6, 6, dtype=torch.float64) / 0.75  # scores over a temperature, as the package divides them
    torch.testing.assert_close(sinkhorn(r, n_iters), sinkhorn_sorting_operator(r, n_iters), rtol=0, atol=1e-12)


def test_block_routing_matches_the_package_reorder_buckets() -> None:
    from sinkhorn_transformer.sinkhorn_transformer import reorder_buckets

    P = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    t = torch.randn(2, 3, 5, 4, 8, dtype=torch.float64)  # (B, H, N, b, E)
    torch.testing.assert_close(route_blocks(P, t), reorder_buckets(t.flatten(0, 1), P.flatten(0, 1)).view_as(t),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_single_block_layer_matches_the_package_with_matched_weights(masked: bool) -> None:
    """One block: routing is trivial on both sides (P = 1), and the package's SortCut path (n_sortcut=1, the one
    whose sorted values are values) attends to [block; block] in one softmax, which is plain attention over the
    block: ours with local=False. Checks projections, heads, scale, masking and the weight copy."""
    ours = make(block_size=8, local=False)
    theirs = PackageSinkhornAttention(D, H, 8, 8, n_sortcut=1).double().eval()
    match_weights(ours, theirs)
    x = torch.randn(3, 8, D, dtype=torch.float64)
    mask = random_mask(3, 8) if masked else torch.ones(3, 8, dtype=torch.bool)
    arg = mask if masked else None
    torch.testing.assert_close(ours(x, arg)[mask], theirs(x, arg)[mask], rtol=0, atol=1e-12)


def test_reference_build_pairs_ours_with_the_package() -> None:
    ours, theirs = build(120, 32, 4)
    assert ours.block_size == theirs.block_size == 50 and ours.sort_activation == "softmax"
    torch.testing.assert_close(theirs.attn.to_q.weight, ours.qkv.weight[:32], rtol=0, atol=0)
    x = torch.randn(2, 120, 32)
    assert ours(x).shape == theirs(x).shape == x.shape


# --- the explicit formulas ----------------------------------------------------------------------------------------


def test_sinkhorn_rows_and_columns_sum_to_one_after_enough_iterations() -> None:
    r = torch.randn(3, 6, 6, dtype=torch.float64)
    P = sinkhorn(r, 200)
    ones = torch.ones(3, 6, dtype=torch.float64)
    torch.testing.assert_close(P.sum(-1), ones, rtol=0, atol=1e-9)
    torch.testing.assert_close(P.sum(-2), ones, rtol=0, atol=1e-9)
    # rectangular (N blocks, T < N targets): rows sum to 1, columns carry N / T each
    P = sinkhorn(torch.randn(3, 8, 5, dtype=torch.float64), 200)
    torch.testing.assert_close(P.sum(-1), torch.ones(3, 8, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(P.sum(-2), torch.full((3, 5), 8 / 5, dtype=torch.float64), rtol=0, atol=1e-9)
    # entries outside ``valid`` are 0 and the valid block is balanced on its own
    valid = torch.zeros(6, 6, dtype=torch.bool)
    valid[:4, :4] = True
    P = sinkhorn(r, 200, valid)
    assert (P[:, ~valid] == 0).all()
    torch.testing.assert_close(P[:, :4, :4], sinkhorn(r[:, :4, :4], 200), rtol=0, atol=1e-12)


def test_hard_identity_permutation_is_block_local_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """P = I routes every block to itself: local + sorted = 2 x masked full attention with a block-diagonal mask."""
    attn = make(block_size=5)
    monkeypatch.setattr(attn, "permutation", lambda k, key_mask: torch.eye(k.size(2), dtype=k.dtype).expand(
        k.size(0), H, -1, -1))
    x = torch.randn(3, 23, D, dtype=torch.float64)
    mask = random_mask(3, 23)
    block = torch.arange(23) // 5
    allowed = (block[:, None] == block[None, :]) & mask[:, None, None, :]  # (B, 1, L, L)
    q, k, v = projections(attn, x)
    y = 2 * softmax_attention(q, k, v, allowed)
    expected = attn.out(y.transpose(1, 2).reshape(3, 23, -1))
    torch.testing.assert_close(attn(x, mask)[mask], expected[mask], rtol=0, atol=1e-12)


@pytest.mark.parametrize("local", [True, False])
def test_matches_the_explicit_formula_with_a_soft_permutation(local: bool) -> None:
    """The learned softmax routing, checked against the equations computed block by block (float64)."""
    attn = make(block_size=4, max_num_blocks=4, local=local, temperature=0.5)  # 6 blocks, the first 4 are targets
    x = torch.randn(3, 22, D, dtype=torch.float64)
    mask = random_mask(3, 22)
    torch.testing.assert_close(attn(x, mask)[mask], explicit(attn, x, mask)[mask], rtol=0, atol=1e-12)
    full = torch.ones(3, 22, dtype=torch.bool)
    torch.testing.assert_close(attn(x, None), explicit(attn, x, full), rtol=0, atol=1e-12)


# --- padding and sparsity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {}, {"sort_activation": "sinkhorn", "sinkhorn_iters": 3},
], ids=["softmax", "sinkhorn"])
def test_padding_and_masked_positions_do_not_change_real_outputs(options: dict) -> None:
    attn = make(block_size=5, max_num_blocks=4, **options)
    x = torch.randn(3, 23, D, dtype=torch.float64)
    mask = random_mask(3, 23)
    y = attn(x, mask)
    # more right padding (two more blocks) with garbage in every masked position, the hole included
    x2 = torch.cat([x, torch.randn(3, 9, D, dtype=torch.float64)], dim=1)
    mask2 = torch.cat([mask, torch.zeros(3, 9, dtype=torch.bool)], dim=1)
    x2[~mask2] = 1e3 * torch.randn(int((~mask2).sum()), D, dtype=torch.float64)
    torch.testing.assert_close(attn(x2, mask2)[:, :23][mask], y[mask], rtol=0, atol=1e-12)
    # a batch without padding equals the same rows alone
    torch.testing.assert_close(attn(x[:1], mask[:1])[mask[:1]], y[:1][mask[:1]], rtol=0, atol=1e-12)


def test_an_output_ignores_the_blocks_it_is_not_routed_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hard-permutation limit (temperature -> 0: each row of P is one-hot): block n's outputs change when block n or
    a block some head routes it to changes, and for no other block."""
    attn = make(block_size=4, temperature=1e-9)
    seen = {}
    permutation = attn.permutation
    monkeypatch.setattr(attn, "permutation", lambda k, key_mask: seen.setdefault("P", permutation(k, key_mask)))
    x = torch.randn(1, 24, D, dtype=torch.float64)
    y = attn(x)
    P = seen["P"][0]  # (H, N, T)
    assert ((P == 0) | (P == 1)).all()
    routed_elsewhere = 0
    for n in range(6):
        routed = {n} | {int(P[h, n].argmax()) for h in range(H)}
        changed = set()
        for m in range(6):
            x2 = x.clone()
            x2[0, 4 * m:4 * m + 4] += torch.randn(4, D, dtype=torch.float64)
            seen.clear()
            if not torch.equal(attn(x2)[0, 4 * n:4 * n + 4], y[0, 4 * n:4 * n + 4]):
                changed.add(m)
        assert changed == routed, (n, changed, routed)
        routed_elsewhere += len(routed) > 1
    assert routed_elsewhere > 0  # blocks routed to other blocks: the sorted branch is exercised


# --- the backbone and the presets ----------------------------------------------------------------------------------


def test_encoder_with_sinkhorn_attention_trains_at_an_odd_length() -> None:
    torch.manual_seed(0)
    attention = partial(SinkhornAttention, block_size=4, max_num_blocks=3)
    encoder = TransformerEncoder(d_model=16, n_layers=2, n_heads=2, d_ff=32, attention=attention, max_length=64)
    x = torch.randn(2, 23, 16)
    lengths = torch.tensor([23, 17])
    y = encoder(x, lengths)
    assert y.shape == x.shape and (y[1, 17:] == 0).all()
    y.sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(layer.attn.sort_net.weight.grad.abs().max() > 0 for layer in encoder.layers)  # the routing learns


# task: block size, pooling, layers, emb, heads, qkv, MLP (= head hidden), dropout, attention dropout, weight decay
LRA_SINKHORN = {
    "listops": (50, "mean", 6, 512, 8, 512, 2048, 0.1, 0.1, 0.1),  # base_listops_config.py
    "text": (50, "mean", 4, 256, 4, 256, 1024, 0.1, 0.1, 0.1),
    "retrieval": (50, "first", 4, 128, 4, 128, 512, 0.1, 0.1, 0.1),
    "image": (64, "mean", 1, 32, 1, 32, 64, 0.1, 0.2, 0.7),
    "pathfinder": (64, "mean", 2, 32, 4, 16, 64, 0.2, 0.1, 0.0),
    "pathx": (64, "mean", 2, 32, 4, 16, 64, 0.2, 0.1, 0.0),  # our Path-X rule: the Pathfinder model settings
}


def compose(experiment: str):
    return compose_config([f"experiment=lra/{experiment}", "paths.output_dir=/tmp/lra_bench_presets"])


@pytest.mark.parametrize("task", list(LRA_SINKHORN))
def test_sinkhorn_presets_hold_the_lra_settings(task: str) -> None:
    block, pooling, layers, emb, heads, qkv, mlp, dropout, attn_dropout, wd = LRA_SINKHORN[task]
    cfg = compose(f"sinkhorn-{task}")
    bb, attn = cfg.model.net.backbone, cfg.model.net.backbone.attention
    assert cfg.model.name == "sinkhorn" and attn._target_.endswith("sinkhorn.SinkhornAttention")
    assert (attn.block_size, attn.max_num_blocks, attn.sort_activation, attn.local, attn.lra_code) == (
        block, 25, "softmax", True, False)
    assert (cfg.model.net.pooling, bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (
        pooling, layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, cfg.optimizer.weight_decay) == (dropout, attn_dropout, wd)
    # LRA's dual head: Dense(mlp) -> Dense(mlp / 2); the single encoder pools and applies one Dense(num_classes)
    # (sinkhorn_transformer.py:195-197)
    head = [mlp, mlp // 2] if task == "retrieval" else 0
    assert cfg.model.net.head_hidden == head and bb.max_length == cfg.task.max_length  # mean / first: no CLS token
    if cfg.task.vocab_size is None:
        cfg.task.vocab_size = 100
    net = instantiate(cfg.model.net)
    attn = net.backbone.layers[0].attn
    assert isinstance(attn, SinkhornAttention) and attn.block_size == block


def test_sinkhorn_pathx_preset_is_the_transformer_pathx_preset_with_the_pathfinder_model() -> None:
    """LRA has no Sinkhorn Path-X config (Table 1: FAIL): the Transformer's Path-X training with Sinkhorn's
    Pathfinder model (pathfinder32/sinkhorn_base.py)."""
    cfg, base = compose("sinkhorn-pathx"), compose("transformer-pathx")
    attention = cfg.model.net.backbone.attention
    assert attention.block_size == 64 and attention.sort_activation == "softmax" and not attention.lra_code
    assert cfg.optimizer == base.optimizer and cfg.scheduler == base.scheduler
    assert cfg.trainer == base.trainer and cfg.task == base.task
