"""Luna (lra_bench/models/attention/luna.py): pack and unpack against their formulas, the layer and the encoder against
a re-statement of fairseq-apollo's LunaSentenceEncoderLayer / LunaLRAEncoder, linear memory, padding, and the presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lra_bench.config import CONFIG_DIR
from lra_bench.models.attention.luna import LunaAttention, LunaBlock, LunaEncoder
from lra_bench.models.attention.transformer import TransformerEncoder, sinusoidal_table
from tests.conftest import compose_config

D, H, L_MEM = 16, 2, 8  # model dim, heads, memory length l


def make(**kw) -> LunaEncoder:
    torch.manual_seed(0)
    args = dict(d_model=D, n_layers=2, n_heads=H, d_ff=32, proj_length=L_MEM, dropout=0.0, attn_dropout=0.0, max_length=64)
    return LunaEncoder(**{**args, **kw}).eval()


def randomize_norms(module: torch.nn.Module) -> None:
    """LayerNorms start at (1, 0); random affine parameters make a mix-up of norms visible."""
    for m in module.modules():
        if isinstance(m, torch.nn.LayerNorm):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)


# ---- the explicit formulas -------------------------------------------------------------------------------------

def attention_ref(q_in, kv_in, Wq, Wk, Wv, key_valid, n_heads):
    """softmax((q_in Wq)(kv_in Wk)^T / sqrt(E)) kv_in Wv per head; keys with key_valid False get no weight."""
    q, k, v = Wq(q_in), Wk(kv_in), Wv(kv_in)
    E = q.size(-1) // n_heads
    outs = []
    for h in range(n_heads):
        s = slice(h * E, (h + 1) * E)
        scores = q[..., s] @ k[..., s].transpose(-1, -2) / math.sqrt(E)
        if key_valid is not None:
            scores = scores.masked_fill(~key_valid[:, None, :], float("-inf"))
        outs.append(torch.softmax(scores, dim=-1) @ v[..., s])
    return torch.cat(outs, dim=-1)


def layer_ref(block: LunaBlock, x, P, x_valid, p_valid):
    """LunaSentenceEncoderLayer.forward (post-LN or normalize_before), written out; dropout off."""
    a = block.attn
    ln = lambda m, t: F.layer_norm(t, t.shape[-1:], m.weight, m.bias, m.eps)  # noqa: E731
    ffn = lambda t: block.mlp[3](F.gelu(block.mlp[0](t)))  # noqa: E731
    xq, pq = (ln(block.norm_x, x), ln(block.norm_p, P)) if block.prenorm else (x, P)
    Y_P = attention_ref(pq, xq, a.pq_proj, a.pk_proj, a.pv_proj, x_valid, a.n_heads)
    Y_X = a.out_proj(attention_ref(xq, Y_P, a.q_proj, a.k_proj, a.v_proj, p_valid, a.n_heads))
    if block.prenorm:
        x, P = x + Y_X, P + Y_P
        return x + ffn(ln(block.norm_ff, x)), P
    x, P = ln(block.norm_x, x + Y_X), (ln(block.norm_p, P + Y_P) if block.norm_p is not None else None)
    return ln(block.norm_ff, x + ffn(x)), P


def encoder_ref(enc: LunaEncoder, x, lengths):
    """LunaLRAEncoder.forward written out: x*sqrt(D) + positions, P*sqrt(D) + its sinusoidal table, embedding
    LayerNorms, P sliced to the longest length (dynamic projection) with rows j >= length masked, the layers."""
    B, L, Dm = x.shape
    scale = math.sqrt(Dm)
    x = x * scale + sinusoidal_table(L, Dm).to(x.dtype)
    n = int(lengths.max())
    P = enc.P[:n] * scale + sinusoidal_table(enc.P.size(0), Dm)[:n].to(x.dtype)
    ln = lambda m, t: F.layer_norm(t, t.shape[-1:], m.weight, m.bias, m.eps)  # noqa: E731
    x, P = ln(enc.embed_norm_x, x), ln(enc.embed_norm_p, P).expand(B, -1, -1)
    x_valid = torch.arange(L)[None] < lengths[:, None]
    p_valid = torch.arange(P.size(1))[None] < lengths[:, None]
    for i in range(enc.n_layers):
        x, P = layer_ref(enc.layers[i % len(enc.layers)], x, P, x_valid, p_valid)
    return x * x_valid[..., None]


def test_pack_matches_softmax_of_memory_queries_over_the_sequence_with_pads_masked() -> None:
    torch.manual_seed(0)
    attn = LunaAttention(D, H).double()
    P, x = torch.randn(2, L_MEM, D, dtype=torch.float64), torch.randn(2, 11, D, dtype=torch.float64)
    valid = torch.arange(11)[None] < torch.tensor([[11], [6]])
    ref = attention_ref(P, x, attn.pq_proj, attn.pk_proj, attn.pv_proj, valid, H)
    torch.testing.assert_close(attn.pack(P, x, valid), ref, rtol=1e-10, atol=1e-10)


def test_unpack_matches_softmax_of_sequence_queries_over_the_packed_memory() -> None:
    torch.manual_seed(0)
    attn = LunaAttention(D, H).double()
    x, Y_P = torch.randn(2, 11, D, dtype=torch.float64), torch.randn(2, L_MEM, D, dtype=torch.float64)
    p_valid = torch.arange(L_MEM)[None] < torch.tensor([[L_MEM], [3]])
    ref = attn.out_proj(attention_ref(x, Y_P, attn.q_proj, attn.k_proj, attn.v_proj, p_valid, H))
    torch.testing.assert_close(attn.unpack(x, Y_P, p_valid), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prenorm", [False, True])
def test_layer_matches_a_restatement_of_the_reference_layer(prenorm: bool) -> None:
    torch.manual_seed(0)
    block = LunaBlock(D, H, 32, 0.0, 0.0, 0.0, prenorm, "gelu").double().eval()
    randomize_norms(block)
    x, P = torch.randn(2, 11, D, dtype=torch.float64), torch.randn(2, L_MEM, D, dtype=torch.float64)
    x_valid = torch.arange(11)[None] < torch.tensor([[11], [6]])
    p_valid = torch.arange(L_MEM)[None] < torch.tensor([[L_MEM], [6]])
    got_x, got_P = block(x, P, x_valid, p_valid)
    ref_x, ref_P = layer_ref(block, x, P, x_valid, p_valid)
    torch.testing.assert_close(got_x, ref_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_P, ref_P, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tie_layers", [False, True])
def test_encoder_matches_a_restatement_of_the_reference_encoder(tie_layers: bool) -> None:
    """Lengths 13 and 5 with l = 8: the short row also exercises dynamic projection (rows j >= 5 masked)."""
    enc = make(n_layers=3, tie_layers=tie_layers).double()
    randomize_norms(enc)
    x, lengths = torch.randn(2, 13, D, dtype=torch.float64), torch.tensor([13, 5])
    torch.testing.assert_close(enc(x, lengths), encoder_ref(enc, x, lengths), rtol=1e-10, atol=1e-10)


# ---- linear cost -----------------------------------------------------------------------------------------------

class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an aten op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.numel = max([self.numel] + [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        return out


def largest_tensor(model: torch.nn.Module, L: int) -> int:
    x = torch.randn(1, L, D, requires_grad=True)
    lengths = torch.tensor([L - 3])  # a pad tail, so the masked attention path runs
    with LargestTensor() as probe:
        model(x, lengths).sum().backward()
    return probe.numel


def test_doubling_the_length_doubles_the_largest_tensor_and_none_is_length_by_length() -> None:
    """Every op output counts (SDPA's fused CPU kernel keeps its (L, l) weights inside; the largest output is the FFN's
    (L, d_ff) hidden layer): all of them grow linearly in L."""
    model = make(max_length=512)
    small, large = largest_tensor(model, 96), largest_tensor(model, 192)
    assert large == 2 * small
    assert large < 192 * 192 // 2
    # SDPA's unfused math path returns the weights, (H, L, l) per row: the largest tensor with a narrow FFN
    n_mem = 16
    narrow = make(max_length=512, proj_length=n_mem, d_ff=8)
    with sdpa_kernel(SDPBackend.MATH):
        assert largest_tensor(narrow, 192) == 2 * largest_tensor(narrow, 96) == H * 192 * n_mem
    # the probe does see quadratic tensors where they exist: the explicit softmax Transformer makes (L, L) weights
    vanilla = TransformerEncoder(D, 1, H, 32, dropout=0.0, attn_dropout=0.0, max_length=512, attention="vanilla")
    assert largest_tensor(vanilla, 192) >= 192 * 192


# ---- padding, holes, bidirectionality, gradients ---------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"prenorm": True, "embed_norm": False}, {"positions": "learned"}, {"tie_layers": True}])
def test_real_positions_do_not_change_when_padding_is_added(kw: dict) -> None:
    model = make(**kw)
    x = torch.randn(1, 10, D)
    alone = model(x, torch.tensor([10]))
    padded = model(torch.cat([x, 100 * torch.randn(1, 7, D)], dim=1), torch.tensor([10]))
    torch.testing.assert_close(padded[:, :10], alone, atol=1e-5, rtol=1e-5)
    assert (padded[:, 10:] == 0).all(), "pad positions come out as zeros"


def test_batch_rows_with_different_lengths_match_their_unpadded_outputs() -> None:
    """Lengths 5 and 3 are shorter than l = 8: each uses only its own first memory rows, whatever the batch holds."""
    model = make()
    xs = [torch.randn(1, n, D) for n in (5, 12, 3)]
    batch = torch.randn(3, 12, D)
    for i, x in enumerate(xs):
        batch[i, : x.size(1)] = x
    out = model(batch, torch.tensor([5, 12, 3]))
    for i, x in enumerate(xs):
        torch.testing.assert_close(out[i : i + 1, : x.size(1)], model(x, torch.tensor([x.size(1)])), atol=1e-5, rtol=1e-5)


def test_a_sequence_of_length_n_reads_only_memory_rows_below_n() -> None:
    model = make()
    x, lengths = torch.randn(1, 5, D), torch.tensor([5])
    before = model(x, lengths)
    with torch.no_grad():
        model.P[5:] += torch.randn(L_MEM - 5, D)
    torch.testing.assert_close(model(x, lengths), before, atol=0, rtol=0)
    with torch.no_grad():
        model.P[4] += torch.randn(D)  # not a constant: the embedding LayerNorm would remove that
    assert not torch.allclose(model(x, lengths), before)


def test_values_at_masked_holes_do_not_reach_other_positions() -> None:
    model = make()
    x, lengths = torch.randn(1, 12, D), torch.tensor([12])
    token_mask = torch.ones(1, 12, dtype=torch.bool)
    token_mask[0, [2, 7]] = False
    y = x.clone()
    y[0, [2, 7]] = 50 * torch.randn(2, D)
    keep = token_mask[0]
    torch.testing.assert_close(model(y, lengths, token_mask)[0, keep], model(x, lengths, token_mask)[0, keep],
                               atol=1e-5, rtol=1e-5)


def test_a_sequence_with_every_position_masked_stays_finite() -> None:
    out = make()(torch.randn(1, 6, D), torch.tensor([6]), torch.zeros(1, 6, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_attention_is_bidirectional() -> None:
    """Changing the last token changes the output at the first position (no causal mask)."""
    model = make(n_layers=1)
    x = torch.randn(1, 12, D)
    y = x.clone()
    y[0, 11] += torch.randn(D)
    lengths = torch.tensor([12])
    assert not torch.allclose(model(x, lengths)[0, 0], model(y, lengths)[0, 0])


@pytest.mark.parametrize("kw", [{}, {"tie_layers": True}, {"prenorm": True, "embed_norm": False, "n_layers": 3},
                                {"bert_init": True, "dropout": 0.1, "attn_dropout": 0.1}])
def test_every_parameter_gets_a_finite_gradient_at_an_odd_length(kw: dict) -> None:
    model = make(**kw).train()
    x = torch.randn(2, 37, D)
    model(x, torch.tensor([37, 20])).pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient (DDP without find_unused_parameters would fail)"
        assert torch.isfinite(p.grad).all(), name
        assert name == "P" or p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_memory_longer_than_the_sequence_is_sliced_to_the_length() -> None:
    out = make(proj_length=32)(torch.randn(2, 9, D), torch.tensor([9, 4]))
    assert out.shape == (2, 9, D) and torch.isfinite(out).all()


def test_projections_are_xavier_with_zero_bias_and_bert_init_is_normal_002() -> None:
    attn = make().layers[0].attn
    bound = (6 / (2 * D)) ** 0.5 * 2**-0.5  # xavier-uniform with gain 1/sqrt(2) (fairseq-apollo reset_parameters)
    assert attn.pq_proj.weight.abs().max() <= bound + 1e-6 and attn.pq_proj.weight.abs().max() > 0.8 * bound
    assert (attn.pq_proj.bias == 0).all() and (attn.out_proj.bias == 0).all()
    bert = make(bert_init=True, d_model=64, d_ff=64, proj_length=256)
    assert abs(bert.layers[0].attn.q_proj.weight.std().item() - 0.02) < 2e-3
    assert abs(bert.P.std().item() - 0.02) < 2e-3 and (bert.layers[0].mlp[0].bias == 0).all()


def test_unsupported_combinations_are_refused() -> None:
    with pytest.raises(ValueError, match="d_qkv"):
        make(d_qkv=8)
    with pytest.raises(ValueError, match="embed_norm"):
        make(prenorm=True, embed_norm=True)
    make(d_qkv=D)  # d_qkv = d_model is the same model


# ---- configs ---------------------------------------------------------------------------------------------------

# Published Luna-256 test accuracy (Luna paper; quoted in Mega, Ma et al. 2023, Table 2); Path-X failed.
PUBLISHED = {"listops": 37.98, "text": 65.78, "retrieval": 79.56, "image": 47.86, "pathfinder": 78.55, "pathx": None}

# task: layers, D, heads, FFN, positions, pooling, dropout, attention dropout, tie layers, BERT init, embedding std,
#       lr, weight decay, batch, steps, warmup, clip
# XuezheMax/fairseq-apollo examples/luna/README.lra.md (the commands) and fairseq/models/lra/model.py (the luna_lra_*
# archs: listop with --encoder-layers 1, imdb, aan, cifar10 (D 64, 8 heads, FFN 128), pf32, pf128 (D 128, 4 heads,
# FFN 128)); Path-X training (no command published): Luna's pf32 command with the Transformer's Path-X batch, steps, clip.
LUNA = {
    "listops": (1, 512, 8, 2048, "sinusoidal", "cls", 0.1, 0.1, True, True, 0.02, 1e-4, 1e-4, 32, 5000, 1000, None),
    "text": (4, 256, 4, 1024, "sinusoidal", "cls", 0.3, 0.3, False, True, 0.02, 5e-5, 1e-4, 32, 20_000, 8000, None),
    "retrieval": (4, 128, 4, 512, "sinusoidal", "cls", 0.1, 0.1, False, False, None, 5e-4, 1e-4, 32, 20_000, 8000, None),
    "image": (1, 64, 8, 128, "sinusoidal", "cls", 0.3, 0.1, False, False, None, 5e-3, 0.0, 256, 35_000, 4000, None),
    "pathfinder": (1, 128, 4, 128, "sinusoidal", "mean", 0.2, 0.1, False, False, None, 1e-3, 0.0, 512, 62_500, 4000, None),
    "pathx": (1, 128, 4, 128, "sinusoidal", "mean", 0.2, 0.1, False, False, None, 1e-3, 0.0, 64, 500_000, 4000, 1.0),
}


def test_published_average_is_the_mean_of_the_five_tasks() -> None:
    assert round(sum(v for v in PUBLISHED.values() if v) / 5, 2) == 61.95


@pytest.mark.parametrize("task", list(LUNA))
def test_presets_hold_the_cited_settings_and_build(task: str) -> None:
    (layers, d, heads, ff, positions, pooling, dropout, attn_dropout, tie, bert, embed_std, lr, wd, batch, steps, warmup,
     clip) = LUNA[task]
    cfg = compose_config([f"experiment=lra/luna-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    bb, net = cfg.model.net.backbone, cfg.model.net
    assert cfg.model.name == "luna" and bb._target_ == "lra_bench.models.attention.luna.LunaEncoder"
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_ff, bb.positions, net.pooling) == (layers, d, heads, ff, positions, pooling)
    assert (bb.proj_length, bb.prenorm, bb.embed_norm, bb.activation, bb.act_dropout) == (256, False, True, "gelu", 0.0)
    assert bb.d_qkv in (None, d)
    assert (bb.dropout, bb.attn_dropout, bb.tie_layers, bb.bert_init, net.embed_init_std) == (dropout, attn_dropout, tie, bert, embed_std)
    # fairseq's LRAModel head: dropout(args.dropout), then Linear(D, classes, bias=False); Retrieval on [u, v, u*v, u-v]
    assert (net.head_hidden, net.head_dropout, net.head_out_bias) == (0, dropout, False)
    assert net.pair_features == ("nli" if task == "retrieval" else "concat")
    assert net.lra_code is False, "Luna is not in LRA's code: lra_code=true is refused"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, list(cfg.optimizer.betas), cfg.optimizer.eps) == (lr, wd, [0.9, 0.98], 1e-8)
    assert not cfg.optimizer.no_decay_norm_bias_embedding, "fairseq adam decays every parameter"
    assert (cfg.scheduler.decay, cfg.scheduler.warmup_steps, cfg.scheduler.warmup_init_lr) == ("rsqrt", warmup, 1e-7)
    assert (cfg.task.batch_size, cfg.trainer.max_steps, cfg.trainer.gradient_clip_val) == (batch, steps, clip)
    header = (Path(CONFIG_DIR) / "experiment" / "lra" / f"luna-{task}.yaml").read_text().split("defaults:")[0]
    assert "fairseq-apollo" in header and (f"{PUBLISHED[task]:.2f}" if PUBLISHED[task] else "FAIL") in header
    with open_dict(cfg):
        cfg.model.net.backbone.max_length = min(cfg.model.net.backbone.max_length, 4096)  # a smaller learned table
    net = instantiate(cfg.model.net)  # no Transformer key reaches LunaEncoder's constructor
    assert isinstance(net.backbone, LunaEncoder) and len(net.backbone.layers) == (1 if tie else layers)


def test_the_model_config_alone_builds_and_runs() -> None:
    cfg = compose_config(["model=luna", "task=listops", "paths.output_dir=/tmp/lra_bench_presets"])
    net = instantiate(cfg.model.net)
    tokens = torch.randint(1, 17, (2, 40))
    assert net(tokens, torch.tensor([40, 25])).shape == (2, cfg.task.num_classes)
