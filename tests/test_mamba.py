"""Mamba: the selective scan against the unrolled recurrence, the layer against mambapy, padding, both directions,
gradients, optimizer groups, the presets (sizes matched to S4's, S4's recipe), and mamba_ssm's CUDA path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from lra_bench.benchmarks.references.mamba import build
from lra_bench.models.ssm.mamba import MambaEncoder, reverse_within_lengths
from lra_bench.models.ssm.selective_scan import affine_scan, cuda_selective_scan, selective_scan
from lra_bench.training.optim import build_param_groups
from tests.conftest import compose_config

TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]
# task: d_model, n_layers of the Mamba preset (6 layers = S4's depth; the width matches S4's parameter count)
PRESETS = {"listops": (128, 6), "text": (128, 6), "retrieval": (136, 6), "image": (288, 6), "pathfinder": (168, 6),
           "pathx": (168, 6)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


def unrolled_scan(u, delta, A, B, C, D, z, delta_bias):
    """mamba_ssm's selective_scan_ref, step by step in (B, L, .) layout: softplus(delta + bias), h, y, D, z."""
    delta = F.softplus(delta + delta_bias)
    h = u.new_zeros(u.size(0), u.size(2), A.size(1))
    ys = []
    for t in range(u.size(1)):
        d = delta[:, t, :, None]
        h = torch.exp(d * A) * h + d * u[:, t, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return (torch.stack(ys, 1) + u * D) * F.silu(z)


def scan_inputs(L: int = 45, E: int = 6, N: int = 5, dtype=torch.float64, strong: bool = False):
    """Random u, Delta (pre-softplus), A, B, C, D, z, delta_bias; ``strong``: decays of up to e^-500 per step."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    A = -torch.rand(E, N, generator=g, dtype=dtype) * (40.0 if strong else 4.0) - 0.1
    delta = r(2, L, E) * (3.0 if strong else 1.0)
    args = (r(2, L, E), delta, A, r(2, L, N), r(2, L, N), r(E), r(2, L, E), r(E))
    return [a.requires_grad_() for a in args]


@pytest.mark.parametrize("chunk", [1, 4, 7, 16, 64])  # 7 and 16 do not divide L = 45; 64 > L
@pytest.mark.parametrize("strong", [False, True])
def test_selective_scan_equals_the_unrolled_recurrence_values_and_gradients(chunk: int, strong: bool) -> None:
    # float64: both sides round at 1e-16, so 1e-10 means "the same recurrence"; strong decays (Delta |A| up to ~500
    # in one step) would overflow a cumulative-sum-of-log-decays scan, the parallel scan only multiplies decays <= 1
    u, delta, A, B, C, D, z, bias = scan_inputs(strong=strong)
    expected = unrolled_scan(u, delta, A, B, C, D, z, bias)
    got = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, chunk=chunk)
    assert rel_err(got, expected) <= 1e-10
    dy = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (u, delta, A, B, C, D, z, bias), dy)
    have = torch.autograd.grad(got, (u, delta, A, B, C, D, z, bias), dy)
    for name, h, w in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), have, want):
        assert rel_err(h, w) <= 1e-10, name


def test_selective_scan_in_float32_is_within_1e_4_of_the_float64_recurrence() -> None:
    # float32 inputs, scan at L = 300 across 5 chunks: the brief's "exact" bound, 1e-4 relative to the output's scale
    u, delta, A, B, C, D, z, bias = scan_inputs(L=300, strong=True)
    expected = unrolled_scan(u, delta, A, B, C, D, z, bias)
    got = selective_scan(*(x.detach().float() for x in (u, delta, A, B, C, D)), z=z.detach().float(),
                         delta_bias=bias.detach().float(), delta_softplus=True, chunk=64)
    assert got.dtype == torch.float32 and rel_err(got.double(), expected) <= 1e-4


def test_affine_scan_runs_both_ways() -> None:
    # h_t = a h_(t-1) + b_t forwards and h_t = a h_(t+1) + b_t backwards, against loops (exact in float64)
    a, b = torch.rand(1, 10, 3, dtype=torch.float64), torch.randn(1, 11, 3, dtype=torch.float64)
    fwd, bwd = [b[:, 0]], [b[:, -1]]
    for t in range(1, 11):
        fwd.append(a[:, t - 1] * fwd[-1] + b[:, t])
        bwd.insert(0, a[:, 10 - t] * bwd[0] + b[:, 10 - t])
    assert torch.allclose(affine_scan(a, b), torch.stack(fwd, 1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(affine_scan(a, b, reverse=True), torch.stack(bwd, 1), rtol=1e-12, atol=1e-12)


def test_selective_scan_keeps_no_per_step_state_for_the_backward() -> None:
    # memory: what the scan saves for the backward is its inputs and one state per chunk, never (B, L, E, N)
    L, E, N, chunk = 256, 8, 4, 32
    u, delta, A = torch.randn(1, L, E), torch.rand(1, L, E), -torch.rand(E, N)
    B, C = torch.randn(1, L, N), torch.randn(1, L, N)
    for x in (u, delta, A, B, C):
        x.requires_grad_()
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        selective_scan(u, delta, A, B, C, chunk=chunk)
    assert max(saved) <= L * E  # the largest: an input such as u (B, L, E)
    assert sum(saved) <= 10 * L * E + (L // chunk) * E * N  # a handful of (L, E) tensors and the chunk states


def test_one_layer_matches_mambapy_with_matched_weights() -> None:
    # the unidirectional layer (RMSNorm + mixer + residual) against mambapy's ResidualBlock, float64: same function
    ours, theirs = build(length=50, d_model=32, n_heads=1)
    ours, theirs = ours.double(), theirs.double()
    x = torch.randn(2, 50, 32, dtype=torch.float64, requires_grad=True)
    y_ours, y_theirs = ours(x), theirs(x)
    assert rel_err(y_ours, y_theirs) <= 1e-10
    (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x)
    (g_theirs,) = torch.autograd.grad(y_theirs.square().sum(), x)
    assert rel_err(g_ours, g_theirs) <= 1e-10
    w_ours = dict(ours.named_parameters())["layer.mixer.fwd.A_log"]
    assert torch.equal(w_ours, theirs.mixer.A_log)


def test_reverse_within_lengths_reverses_each_row_and_leaves_pads() -> None:
    x = torch.arange(10).view(2, 5, 1)
    out = reverse_within_lengths(x, torch.tensor([3, 5]))[..., 0]
    assert out.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def small_encoder(bidirectional: bool = True, chunk: int = 8) -> MambaEncoder:
    torch.manual_seed(0)
    return MambaEncoder(16, n_layers=2, d_state=4, bidirectional=bidirectional, chunk=chunk).double()


def test_padding_never_reaches_real_positions_in_either_direction() -> None:
    # rows of different lengths in one batch, garbage (large values, NaN, inf) in the pads: each row's output is
    # the row run alone without pads, and pads come out zero; gradients stay finite
    net = small_encoder()
    lengths = torch.tensor([30, 17, 9])
    x = torch.randn(3, 30, 16, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 1e3 * torch.randn(30 - n, 16, dtype=torch.float64)
    x[1, 20], x[2, 12, 3] = float("nan"), float("inf")
    x.requires_grad_()
    y = net(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = net(x[b: b + 1, :n].detach(), torch.tensor([n]))
        assert rel_err(y[b: b + 1, :n], alone) <= 1e-10
        assert (y[b, n:] == 0).all()
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all() and (grad[1, 17:] == 0).all()


def test_bidirectional_output_at_t_depends_on_both_sides() -> None:
    net, causal = small_encoder(bidirectional=True), small_encoder(bidirectional=False)
    x = torch.randn(1, 24, 16, dtype=torch.float64)
    lengths = torch.tensor([24])
    t = 12
    for model, sees_future in ((net, True), (causal, False)):
        base = model(x, lengths)[0, t]
        past, future = x.clone(), x.clone()
        past[0, t - 5] += 1.0
        future[0, t + 5] += 1.0
        assert not torch.allclose(model(past, lengths)[0, t], base)
        changed_by_future = not torch.allclose(model(future, lengths)[0, t], base)
        assert changed_by_future == sees_future


def test_every_parameter_gets_a_finite_gradient() -> None:
    net = small_encoder()
    x = torch.randn(2, 20, 16, dtype=torch.float64)
    net(x, torch.tensor([20, 13])).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_a_log_and_d_are_excluded_from_weight_decay() -> None:
    # the official _no_weight_decay (A_log, D), plus biases and norm weights as the S4 recipe's backbones
    net = small_encoder()
    groups = build_param_groups(net, lr=1e-3, weight_decay=0.05)
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    for direction in ("fwd", "bwd"):
        assert decay[f"layers.0.mixer.{direction}.A_log"] == decay[f"layers.1.mixer.{direction}.D"] == 0.0
        assert decay[f"layers.0.mixer.{direction}.dt_proj.bias"] == 0.0
        assert decay[f"layers.0.mixer.{direction}.x_proj.weight"] == 0.05
    assert decay["layers.0.norm.weight"] == decay["norm_f.weight"] == 0.0
    assert decay["layers.0.mixer.in_proj.weight"] == decay["layers.0.mixer.out_proj.weight"] == 0.05


def preset(experiment: str):
    cfg = compose_config([f"experiment=lra/{experiment}", "paths.output_dir=/tmp/lra_bench_presets"])
    with open_dict(cfg):
        cfg.task.vocab_size = cfg.task.vocab_size or 256  # text/retrieval take it from the data
    return cfg


def non_embedding_params(cfg) -> int:
    net = instantiate(cfg.model.net)
    skip = set(net.embedding_parameter_names())
    return sum(p.numel() for n, p in net.named_parameters() if n not in skip)


@pytest.mark.parametrize("task", TASKS)
def test_presets_match_s4_in_size_and_training_recipe(task: str) -> None:
    cfg, s4 = preset(f"mamba-{task}"), preset(f"s4-{task}")
    bb = cfg.model.net.backbone
    assert cfg.model.name == "mamba" and (cfg.model.d_model, bb.n_layers) == PRESETS[task]
    assert (bb.d_state, bb.d_conv, bb.expand, bb.dt_rank, bb.norm, bb.bidirectional) == (16, 4, 2, None, "rms", True)
    # Delta's init range is Mamba's own (state-spaces/mamba mamba_ssm/modules/mamba_simple.py:39-40), also on Path-X
    # where S4 lowers dt_min to 1e-4; dropout is the S4 preset's
    assert (bb.dt_min, bb.dt_max, bb.dropout) == (0.001, 0.1, s4.model.net.backbone.dropout)
    # the recipe: everything outside the backbone is the S4 preset's (data, batch, optimizer, schedule, epochs, head)
    ours_cfg, s4_cfg = OmegaConf.to_container(cfg, resolve=True), OmegaConf.to_container(s4, resolve=True)
    for key in ("task", "optimizer", "scheduler", "trainer", "seed"):
        assert ours_cfg[key] == s4_cfg[key], key
    head = lambda c: {k: v for k, v in c["model"]["net"].items() if k not in ("backbone", "d_model")}  # noqa: E731
    assert head(ours_cfg) == head(s4_cfg)
    ours, theirs = non_embedding_params(cfg), non_embedding_params(s4)
    assert abs(ours / theirs - 1) <= 0.10, (ours, theirs)


@pytest.mark.cuda
def test_cuda_kernel_path_gives_the_chunked_scan_outputs_and_gradients() -> None:
    """Run on a GPU machine with mamba_ssm installed: `make test-cuda` (not part of make test on CPU)."""
    assert torch.cuda.is_available(), "make test-cuda needs a CUDA device"
    assert cuda_selective_scan() is not None, "make test-cuda needs mamba_ssm installed (pip install mamba-ssm)"
    # float32 on both sides, different summation orders: 1e-4 relative
    args = [a.detach().float().cuda().requires_grad_() for a in scan_inputs(L=300, E=64, N=16)]
    u, delta, A, B, C, D, z, bias = args
    kw = dict(z=z, delta_bias=bias, delta_softplus=True)
    kernel, chunked = (selective_scan(u, delta, A, B, C, D, use_kernel=k, **kw) for k in (True, False))
    assert rel_err(kernel, chunked) <= 1e-4
    dy = torch.randn_like(kernel)
    for g_k, g_c in zip(torch.autograd.grad(kernel, args, dy), torch.autograd.grad(chunked, args, dy)):
        assert rel_err(g_k, g_c) <= 1e-3  # gradients sum over L: float32 reductions in another order
    # the whole encoder (selective_scan_fn, and causal_conv1d if installed) against the CPU path, padded rows
    net = small_encoder().float()
    x, lengths = torch.randn(3, 40, 16), torch.tensor([40, 31, 5])
    cpu = net(x, lengths)
    gpu = net.cuda()(x.cuda(), lengths.cuda()).cpu()
    assert rel_err(gpu, cpu) <= 1e-4
