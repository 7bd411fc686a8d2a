"""Reformer LSH attention: HF parity, the one-chunk formula, padding invariance, sparsity, hashing, presets."""

from __future__ import annotations

from functools import partial

import hydra
import pytest
import torch

from lra_bench.benchmarks.references.reformer import build, hf_attention, match
from lra_bench.models.attention.reformer import ReformerAttention
from lra_bench.models.attention.transformer import TransformerEncoder
from lra_bench.models.masks import length_mask
from tests.conftest import compose_config

PAPER = dict(out_proj=False)  # the default, the paper's / HF's LSHSelfAttention (its output dense sits outside it)
# LRA's options without lra_code: LRA's scores (no key norm, * sqrt(E), no self mask), our padding rule
LRA_OPTIONS = dict(self_mask=False, key_norm=False, score_scale="lra", out_proj=False)


def paired(d: int, h: int, n_hashes: int, n_buckets: int, chunk: int, seed: int = 3):
    """Ours (paper variant) and HF's LSHSelfAttention in float64, weights and rotations matched."""
    torch.manual_seed(seed)
    ours = ReformerAttention(d, h, n_hashes=n_hashes, n_buckets=n_buckets, chunk_length=chunk, **PAPER).double()
    theirs = hf_attention(ours, d, hash_seed=seed).double()
    match(ours, theirs, hash_seed=seed)
    return ours.eval(), theirs.eval()


# (L, hashes, buckets, chunk): chunk multiples, several rounds, L not a chunk multiple (HF padded as its
# ReformerModel pads), L shorter than one chunk (HF then runs full attention)
@pytest.mark.parametrize("length, n_hashes, n_buckets, chunk", [(24, 1, 4, 4), (24, 3, 4, 4), (30, 2, 6, 5),
                                                               (27, 2, 8, 4), (7, 2, 4, 8)])
def test_matches_hf_lsh_self_attention(length: int, n_hashes: int, n_buckets: int, chunk: int) -> None:
    ours, theirs = paired(16, 2, n_hashes, n_buckets, chunk)
    x = torch.randn(2, length, 16, dtype=torch.float64)
    # float64, same rotations: only summation order differs (1e-15); 1e-10 leaves room for the -1e5 self score
    torch.testing.assert_close(ours(x, None), theirs(x), atol=1e-10, rtol=0)


def test_padded_batch_matches_hf_on_each_sequence_alone() -> None:
    ours, theirs = paired(16, 2, 2, 4, 4)
    lengths = torch.tensor([21, 13, 4, 1])
    x = torch.randn(4, 25, 16, dtype=torch.float64)
    y = ours(x, length_mask(lengths, 25))
    for b, n in enumerate(lengths.tolist()):
        # 1e-9: a length-1 row attends only to itself at score -1e5, where float64's spacing is 1.5e-11
        torch.testing.assert_close(y[b, :n], theirs(x[b : b + 1, :n])[0], atol=1e-9, rtol=0)


def test_benchmark_pair_computes_the_same_function() -> None:
    ours, theirs = build(length=130, d_model=32, n_heads=4, seed=1)
    assert ours.chunk_length == 14 and ours.n_hashes == 1 and ours.n_buckets == 10  # LRA: 130 // 10 + 1
    x = torch.randn(2, 130, 32)
    torch.testing.assert_close(ours(x, None), theirs(x), atol=1e-5, rtol=1e-5)  # float32 sums in another order


def full_attention(qk: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, scale: float, self_mask: bool,
                   key_norm: bool) -> torch.Tensor:
    """The explicit quadratic formula: qk, v (B, H, L, E), valid (B, L) -> (B, H, L, E)."""
    k = qk * torch.rsqrt(qk.pow(2).mean(-1, keepdim=True) + 1e-6) if key_norm else qk
    s = qk @ k.transpose(-1, -2) * scale
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    if self_mask:
        s = s.masked_fill(torch.eye(qk.size(2), dtype=torch.bool), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("variant", ["paper", "lra"])
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_one_chunk_equals_full_shared_qk_attention(variant: str, n_hashes: int) -> None:
    """With one chunk covering the sequence every query sees every key in every round: full attention with
    shared QK (self masked in the paper's variant; LRA's multiplies q.k by sqrt(E)), whatever the hashes."""
    B, L, D, H = 2, 19, 16, 2
    kw = PAPER if variant == "paper" else LRA_OPTIONS
    torch.manual_seed(0)
    attn = ReformerAttention(D, H, n_hashes=n_hashes, n_buckets=6, chunk_length=L, **kw).double().eval()
    x = torch.randn(B, L, D, dtype=torch.float64)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, 5], valid[1, 12:] = False, False  # a hole and a right pad
    qk = attn.query_key(x).view(B, L, H, -1).transpose(1, 2)
    v = attn.value(x).view(B, L, H, -1).transpose(1, 2)
    E = qk.size(-1)
    want = full_attention(qk, v, valid, E**-0.5 if variant == "paper" else E**0.5, variant == "paper",
                          variant == "paper").transpose(1, 2).reshape(B, L, D)
    torch.testing.assert_close(attn(x, valid)[valid], want[valid], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n_hashes", [1, 2])  # one round: SDPA with a key bias; two: explicit scores
@pytest.mark.parametrize("kw", [LRA_OPTIONS, PAPER], ids=["lra", "paper"])
def test_real_outputs_ignore_padding_amount_and_values(kw: dict, n_hashes: int) -> None:
    torch.manual_seed(0)
    attn = ReformerAttention(16, 2, n_hashes=n_hashes, n_buckets=4, chunk_length=4, **kw).double().eval()
    lengths = torch.tensor([21, 13, 4, 1])
    x = torch.randn(4, 21, 16, dtype=torch.float64)
    y = attn(x, length_mask(lengths, 21))
    x2 = torch.cat([x, torch.zeros(4, 10, 16, dtype=torch.float64)], 1)
    pads = ~length_mask(lengths, 31)
    x2[pads] = 50 * torch.randn(int(pads.sum()), 16, dtype=torch.float64)  # garbage, any bucket it would hash to
    y2 = attn(x2, ~pads)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(y2[b, :n], y[b, :n], atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_hole_in_the_mask_does_not_reach_other_positions(n_hashes: int) -> None:
    torch.manual_seed(0)
    attn = ReformerAttention(16, 2, n_hashes=n_hashes, n_buckets=4, chunk_length=4).double().eval()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    mask = length_mask(torch.tensor([23, 17]), 23)
    mask[0, [3, 4, 11]], mask[1, 0] = False, False
    y = attn(x, mask)
    x2 = x.clone()
    x2[~mask] = 30 * torch.randn(int((~mask).sum()), 16, dtype=torch.float64)
    torch.testing.assert_close(attn(x2, mask)[mask], y[mask], atol=1e-12, rtol=0)


def test_each_query_depends_only_on_its_chunk_and_the_one_before() -> None:
    """d out_i / d x_j is nonzero exactly for the j sorted into i's chunk or the previous chunk in some round
    (previous across rounds, cyclically, for a round's first chunk): the pattern is sparse (here 8 of 32)."""
    L, C, K, nb = 32, 4, 2, 8
    torch.manual_seed(0)
    attn = ReformerAttention(16, 1, n_hashes=K, n_buckets=nb, chunk_length=C).double().eval()
    x = torch.randn(1, L, 16, dtype=torch.float64, requires_grad=True)
    buckets = attn.hash(attn.query_key(x).view(1, L, 1, -1).transpose(1, 2))[0, 0]  # (K, L)
    chunk = torch.empty(K, L, dtype=torch.long)  # chunk index of each position, rounds numbered after each other
    for r in range(K):
        ranked = sorted(range(L), key=lambda t: (int(buckets[r, t]), t))
        for rank, t in enumerate(ranked):
            chunk[r, t] = r * (L // C) + rank // C
    n_chunks = K * L // C
    y = attn(x, None)
    for i in range(L):
        seen = {i}
        for r in range(K):
            own = int(chunk[r, i])
            seen |= {j for j in range(L) for r2 in range(K) if int(chunk[r2, j]) in (own, (own - 1) % n_chunks)}
        (grad,) = torch.autograd.grad(y[0, i].sum(), x, retain_graph=True)
        assert set(torch.nonzero(grad[0].abs().sum(-1)).flatten().tolist()) == seen
        assert len(seen) < L


def test_hashing_is_fixed_and_shared_across_heads_layers_and_modes() -> None:
    """LRA draws its rotation from PRNGKey(0) in every call: one rotation, every layer, head, step and mode."""
    a = ReformerAttention(16, 4, n_hashes=2, n_buckets=4, chunk_length=4)
    b = ReformerAttention(16, 4, n_hashes=2, n_buckets=4, chunk_length=4)
    assert torch.equal(a.rotations, b.rotations) and a.rotations.shape == (4, 4, 2, 2)
    assert all(torch.equal(a.rotations[h], a.rotations[0]) for h in range(4))
    assert "rotations" in a.state_dict()  # a checkpoint keeps the hashing
    x = torch.randn(2, 22, 16)
    a.train()
    y_train = a(x, None)
    a.eval()
    torch.testing.assert_close(a(x, None), y_train, atol=0, rtol=0)
    torch.testing.assert_close(a(x, None), a(x, None), atol=0, rtol=0)
    c = ReformerAttention(16, 4, n_hashes=2, n_buckets=4, chunk_length=4, hash_seed=1)
    assert not torch.equal(a.rotations, c.rotations)


def test_lra_code_has_model_width_and_no_output_projection_the_paper_has_both() -> None:
    attn = ReformerAttention(64, 8, d_qkv=32, max_length=1025, lra_code=True)  # LRA Image: qkv_dim 32 is ignored
    assert attn.out is None and attn.query_key.weight.shape == (64, 64) and attn.head_dim == 8
    assert attn.scale == pytest.approx(8**0.5) and not (attn.self_mask or attn.key_norm)  # dots * sqrt(E)
    paper = ReformerAttention(64, 8, d_qkv=32, max_length=1025)
    assert paper.out.weight.shape == (64, 32) and paper.scale == pytest.approx(4**-0.5) and paper.chunk_length == 103
    assert paper.self_mask and paper.key_norm
    with pytest.raises(ValueError, match="lra_code=True runs LRA's Reformer"):
        ReformerAttention(64, 8, lra_code=True, self_mask=True)  # the two settings never mix


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_encoder_with_reformer_trains_at_an_odd_length(n_hashes: int) -> None:
    torch.manual_seed(0)  # training mode, attention dropout 0.1 (the encoder's default)
    attention = partial(ReformerAttention, n_hashes=n_hashes, n_buckets=4)
    enc = TransformerEncoder(32, 2, 4, 64, max_length=50, attention=attention)
    assert enc.layers[0].attn.chunk_length == 13  # 50 // 4 + 1
    x = torch.randn(2, 37, 32)
    lengths = torch.tensor([37, 20])
    y = enc(x, lengths)
    assert y.shape == (2, 37, 32) and torch.all(y[1, 20:] == 0)
    y.square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# task: layers, emb, heads, qkv, mlp, dropout, head hidden
LRA_REFORMER = {
    "listops": (6, 512, 8, 512, 2048, 0.1, 2048),  # base_listops_config.py
    "text": (4, 256, 4, 256, 1024, 0.1, 1024),
    "retrieval": (4, 128, 4, 128, 512, 0.1, [512, 256]),
    "image": (4, 64, 8, 32, 64, 0.3, 64),
    "pathfinder": (2, 64, 8, 32, 64, 0.2, 64),
    "pathx": (2, 64, 8, 32, 64, 0.2, 64),
}


@pytest.mark.parametrize("task", list(LRA_REFORMER))
def test_reformer_presets_hold_the_lra_settings(task: str) -> None:
    layers, emb, heads, qkv, mlp, dropout, head = LRA_REFORMER[task]
    cfg = compose_config([f"experiment=lra/reformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    base = compose_config([f"experiment=lra/transformer-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    bb, net, att = cfg.model.net.backbone, cfg.model.net, cfg.model.net.backbone.attention
    assert cfg.model.name == "reformer" and att._target_.endswith("reformer.ReformerAttention")
    assert (att.n_hashes, att.n_buckets, att.chunk_length, att.hash_seed) == (1, 10, None, 0)
    assert att.lra_code is False and not {"self_mask", "key_norm", "score_scale", "out_proj"} & set(att)
    sizes = (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff, bb.dropout)
    assert sizes == (layers, emb, heads, qkv, mlp, dropout)
    assert bb.attn_dropout == 0.0  # LRA's reformer_attention.py never applies it
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head
    assert net.lra_code is False  # the top-level switch's default
    # everything else (pooling, positions, max length, optimiser, schedule, batch) is the Transformer preset's
    base_bb = base.model.net.backbone
    assert (net.pooling, bb.positions, bb.max_length, bb.prenorm) == (base.model.net.pooling, base_bb.positions,
                                                                     base_bb.max_length, True)
    assert cfg.optimizer == base.optimizer and cfg.scheduler == base.scheduler and cfg.trainer == base.trainer
    assert cfg.task.batch_size == base.task.batch_size


@pytest.mark.parametrize("lra_code", [False, True])
def test_image_preset_builds_lra_sized_attention(lra_code: bool) -> None:
    cfg = compose_config(["experiment=lra/reformer-image", f"lra_code={str(lra_code).lower()}",
                          "paths.output_dir=/tmp/lra_bench_presets"])
    net = hydra.utils.instantiate(cfg.model.net)
    attn = net.backbone.layers[0].attn
    assert isinstance(attn, ReformerAttention) and len(net.backbone.layers) == 4 and attn.lra_code is lra_code
    if lra_code:  # LRA: emb 64 / 8 heads, qkv_dim ignored, no output projection
        assert (attn.head_dim, attn.out) == (8, None)
    else:  # qkv 32 / 8 heads, C = 1025 // 10 + 1
        assert (attn.chunk_length, attn.head_dim, attn.out.weight.shape) == (103, 4, (64, 32))
