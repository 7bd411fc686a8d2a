"""S5: the SSM against its recurrence and s5-pytorch, HiPPO-N init, padding, directions, gradients, groups, presets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lra_bench.benchmarks.references.s5 import build
from lra_bench.models.classifier import ClassifierHead, SequenceClassifier
from lra_bench.models.ssm.s4_kernels import hippo_legs
from lra_bench.models.ssm.s5 import S5Encoder, S5Layer, S5SSM, block_diag_init, hippo_n_eig
from lra_bench.training.optim import build_param_groups
from tests.conftest import compose_config
from tests.ssm_checks import (assert_every_parameter_gets_a_finite_gradient, assert_flax_dense_init,
                              assert_token_preset_embeds_one_hot_tokens_with_a_flax_dense,
                              assert_real_positions_ignore_padding, assert_sees_the_past_only_unless_bidirectional,
                              flax_dense_apply, flax_gelu, with_nontrivial_norm_stats)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def unrolled_s5(ssm: S5SSM, u: torch.Tensor) -> torch.Tensor:
    """S5 from its equations, one step at a time in complex128: u (L, H) -> y (L, H).

    Lambda_bar = exp(Lambda Delta), B_bar = (Lambda_bar - 1) / Lambda B~ (ZOH) or the bilinear pair;
    x_k = Lambda_bar x_{k-1} + B_bar u_k; y_k = s Re(C1 x_k) [+ s Re(C2 x'_k), x' backwards] + D u_k, s = 2
    with conjugate symmetry."""
    with torch.no_grad():
        lam = torch.complex(ssm.Lambda_re, ssm.Lambda_im).to(torch.complex128)
        delta = torch.exp(ssm.log_step).double()
        B = torch.view_as_complex(ssm.B).to(torch.complex128)
        if ssm.discretization == "zoh":
            lam_bar = torch.exp(lam * delta)
            B_bar = ((lam_bar - 1) / lam)[:, None] * B
        else:
            lam_bar = (1 + delta / 2 * lam) / (1 - delta / 2 * lam)
            B_bar = (delta / (1 - delta / 2 * lam))[:, None] * B
        Cs = [C.to(torch.complex128) for C in ssm.c_tilde()]
        scale = 2.0 if ssm.conj_sym else 1.0
        uc = u.to(torch.complex128)
        y = u.double() * ssm.D.double()
        for reverse, C in zip((False, True), Cs):
            x = torch.zeros(lam.numel(), dtype=torch.complex128)
            steps = range(u.size(0) - 1, -1, -1) if reverse else range(u.size(0))
            for k in steps:
                x = lam_bar * x + B_bar @ uc[k]
                y[k] += scale * (C @ x).real
        return y


# float64 throughout: only rounding separates the chunked scan from the loop
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("conj_sym", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_ssm_equals_the_unrolled_recurrence(discretization: str, conj_sym: bool, bidirectional: bool) -> None:
    torch.manual_seed(0)
    ssm = S5SSM(6, 8, blocks=2, conj_sym=conj_sym, bidirectional=bidirectional, discretization=discretization,
                C_init="lecun_normal").double()
    u = torch.randn(2, 45, 6, dtype=torch.float64)
    with torch.no_grad():
        got = ssm(u)
    for i in range(2):
        assert rel_err(got[i], unrolled_s5(ssm, u[i])) <= 1e-10


@pytest.mark.parametrize("C_init", ["trunc_standard_normal", "complex_normal"])
def test_complex_normal_and_trunc_c_inits_follow_the_same_recurrence(C_init: str) -> None:
    torch.manual_seed(1)
    ssm = S5SSM(4, 8, blocks=1, C_init=C_init).double()
    u = torch.randn(1, 20, 4, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(ssm(u)[0], unrolled_s5(ssm, u[0])) <= 1e-10


def test_matches_s5_pytorch_with_matched_weights() -> None:
    """s5-pytorch keeps all P states and takes Re(C x); ours keeps P/2 and takes 2 Re(C x). With its weights set
    to the conjugate-pair expansion of ours (references/s5.py) the two are the same function. float32 (the
    package computes in complex64): 1e-4 relative, for the output and the input gradient."""
    ours, theirs = build(length=64, d_model=16, n_heads=1, seed=0)
    u = torch.randn(2, 64, 16, requires_grad=True)
    a = ours(u)
    (ga,) = torch.autograd.grad(a.square().sum(), u)
    b = theirs(u)
    (gb,) = torch.autograd.grad(b.square().sum(), u)
    assert rel_err(a, b) <= 1e-4
    assert rel_err(ga, gb) <= 1e-4


def test_hippo_n_eigenvalues_have_real_part_minus_half_and_come_in_conjugate_pairs() -> None:
    n = 16
    lam, V = hippo_n_eig(n)
    torch.testing.assert_close(lam.real, torch.full((n,), -0.5, dtype=torch.float64))
    assert (lam.imag[: n // 2] < 0).all() and torch.allclose(lam.imag[: n // 2].flip(0), -lam.imag[n // 2 :])
    # V diagonalises the normal part S = A + P P^T of HiPPO-LegS, and its eigenvalues are S's (numpy-free check)
    A, _, P = hippo_legs(n)
    S = (A + P[:, None] * P[None, :]).to(torch.complex128)
    torch.testing.assert_close(V @ torch.diag(lam) @ V.conj().T, S, atol=1e-10, rtol=0)
    expected = torch.linalg.eigvals(S)
    assert torch.allclose(torch.sort(expected.imag).values, torch.sort(lam.imag).values, atol=1e-9)


def test_block_init_repeats_the_block_spectrum_and_v_inverse_is_v_star() -> None:
    lam, V, Vinv = block_diag_init(d_state=12, blocks=3, conj_sym=True)
    block, _ = hippo_n_eig(4)
    torch.testing.assert_close(lam, block[:2].repeat(3))  # first half (negative imaginary parts) of each block
    assert V.shape == (12, 6) and Vinv.shape == (6, 12)
    torch.testing.assert_close(Vinv @ V, torch.eye(6, dtype=torch.complex128), atol=1e-12, rtol=0)
    assert (V[:4, 2:] == 0).all() and (V[4:, :2] == 0).all()  # block diagonal


def test_timescales_per_state_are_log_uniform_in_dt_range_and_d_is_standard_normal() -> None:
    torch.manual_seed(2)
    ssm = S5SSM(512, 2048, blocks=16, dt_min=1e-3, dt_max=1e-1)
    log_step, D = ssm.log_step.detach(), ssm.D.detach()
    assert log_step.shape == (1024,)
    assert log_step.min() >= math.log(1e-3) and log_step.max() <= math.log(1e-1)
    assert abs(float(log_step.mean()) - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.15
    assert abs(float(D.std()) - 1.0) < 0.1


@pytest.mark.parametrize("C_init,expected_sd", [("trunc_standard_normal", 1 / math.sqrt(64)),
                                                ("lecun_normal", 1 / math.sqrt(64 * 32)),
                                                ("complex_normal", math.sqrt(0.5))])
def test_c_init_scales_follow_s5(C_init: str, expected_sd: float) -> None:
    """C = C0 V with C0's real and imaginary parts of sd 1/sqrt(P) (trunc), 1/sqrt(P H) (lecun, JAX counts H as
    receptive field) or C~ ~ N(0, 1/2) directly (complex_normal). V has orthonormal columns, so every column of
    C V keeps C0's per-part variance on average; checked within 10%."""
    torch.manual_seed(3)
    ssm = S5SSM(32, 64, blocks=1, bidirectional=False, C_init=C_init)
    sd = float(ssm.C.detach().std())
    assert abs(sd - expected_sd) / expected_sd < 0.1


@pytest.mark.parametrize("activation", ["gelu", "full_glu", "half_glu1", "half_glu2"])
def test_activations_are_s5s_with_flax_tanh_gelu_against_a_numpy_restatement(activation: str) -> None:
    """lindermanlab/S5 ``s5/layers.py`` lines 69-82 in numpy with the layer's own weights (float64, eval): flax's
    ``nn.gelu`` is the tanh approximation, ``out1``/``out2`` are Dense maps, half_glu2 gates the raw SSM output with
    GELU only on the gate input. Exact GELU would differ by ~1e-4."""
    torch.manual_seed(4)
    layer = S5Layer(S5SSM(4, 4, blocks=1), 4, activation=activation, norm="layer").double().eval()
    x = torch.randn(1, 9, 4, dtype=torch.float64)
    with torch.no_grad():
        z = layer.seq(layer.norm(x))[0].numpy()
        got = layer(x, torch.ones(1, 9, 1, dtype=torch.float64))[0].numpy()
    g = flax_gelu(z)
    if activation == "gelu":
        out = g
    else:
        gate = 1.0 / (1.0 + np.exp(-flax_dense_apply(layer.out2, g)))
        value = {"full_glu": lambda: flax_dense_apply(layer.out1, g), "half_glu1": lambda: g, "half_glu2": lambda: z}
        out = value[activation]() * gate
    np.testing.assert_allclose(got, x[0].numpy() + out, rtol=0, atol=1e-12)


def test_gate_maps_are_initialised_as_flax_dense() -> None:
    """S5's ``out1``/``out2`` are flax ``nn.Dense(H)``: lecun_normal (sd H^-1/2), zero bias (H = 128: sd 0.088)."""
    torch.manual_seed(5)
    layer = S5Layer(S5SSM(128, 8, blocks=1), 128, activation="full_glu")
    assert_flax_dense_init(layer.out1, 128)
    assert_flax_dense_init(layer.out2, 128)


def test_retrieval_decoder_is_s5s_dense_tanh_gelu_dense() -> None:
    """S5 ``seq_model.py`` ``RetrievalDecoder`` (lines 206-220): Dense(H) -> flax nn.gelu (tanh) -> Dense(classes), on
    the s5-retrieval preset's head, restated in numpy with its weights (float64)."""
    cfg = compose_config(["experiment=lra/s5-retrieval", "paths.output_dir=/tmp/lra_bench_presets"])
    head = ClassifierHead(4 * 8, 2, cfg.model.net.head_hidden, cfg.model.net.head_activation, 0.0, True).double().eval()
    first, last = head.net[0], head.net[-1]
    x = torch.randn(5, 32, dtype=torch.float64)
    with torch.no_grad():
        got = head(x).numpy()
    expected = flax_dense_apply(last, flax_gelu(flax_dense_apply(first, x.numpy())))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("prenorm", [True, False])
def test_real_positions_do_not_depend_on_padding(prenorm: bool) -> None:
    torch.manual_seed(5)
    assert_real_positions_ignore_padding(with_nontrivial_norm_stats(S5Encoder(8, n_layers=2, d_state=8, blocks=2,
                                                                              prenorm=prenorm)))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_output_at_t_depends_on_both_sides_only_when_bidirectional(bidirectional: bool) -> None:
    torch.manual_seed(6)
    assert_sees_the_past_only_unless_bidirectional(S5SSM(3, 8, blocks=2, bidirectional=bidirectional).double(),
                                                   bidirectional)


def test_every_parameter_gets_a_finite_gradient() -> None:
    torch.manual_seed(7)
    assert_every_parameter_gets_a_finite_gradient(S5Encoder(8, n_layers=2, d_state=8, blocks=2, activation="full_glu",
                                                            dropout=0.1))


def group_of(groups: list[dict], name: str) -> dict:
    return next(g for g in groups if name in g["names"])


# opt_config, dt_global -> (lr, weight decay) of Lambda, log_step, B, C1, D with lr 0.004, lr_factor 4, wd 0.07
SSM, LR, WD = 0.001, 0.004, 0.07
GROUPS = {
    ("standard", False): [(SSM, 0.0), (SSM, 0.0), (SSM, 0.0), (LR, WD), (LR, WD)],
    ("standard", True): [(SSM, 0.0), (LR, WD), (SSM, 0.0), (LR, WD), (LR, WD)],
    ("BandCdecay", False): [(SSM, 0.0), (SSM, 0.0), (SSM, WD), (LR, WD), (LR, WD)],
    ("BfastandCdecay", False): [(SSM, 0.0), (SSM, 0.0), (LR, WD), (LR, WD), (LR, WD)],
    ("noBCdecay", False): [(SSM, 0.0), (SSM, 0.0), (SSM, 0.0), (SSM, 0.0), (SSM, 0.0)],
}


@pytest.mark.parametrize("opt_config,dt_global", list(GROUPS))
def test_optimizer_groups_follow_s5_opt_configs(opt_config: str, dt_global: bool) -> None:
    enc = S5Encoder(8, n_layers=1, d_state=8, blocks=2, lr=LR, lr_factor=4.0, opt_config=opt_config, dt_global=dt_global)
    groups = build_param_groups(SequenceClassifier(enc, 8, 3, vocab_size=10), lr=LR, weight_decay=WD)
    k = "backbone.layers.0.seq."
    for name, expected in zip(("Lambda_re", "log_step", "B", "C1", "D"), GROUPS[(opt_config, dt_global)]):
        g = group_of(groups, k + name)
        assert g["lr"] == pytest.approx(expected[0]) and g["weight_decay"] == expected[1], name
    assert group_of(groups, k + "Lambda_im")["lr"] == pytest.approx(SSM)
    for name in ("backbone.layers.0.norm.norm.weight", "backbone.layers.0.out2.bias", "embedding.weight", "head.net.1.weight"):
        g = group_of(groups, name)  # S5 decays everything outside the SSM groups (its "norm" key never matches)
        assert (g["lr"], g["weight_decay"]) == (LR, WD), name


# lindermanlab/S5 bin/run_experiments/run_lra_<task>.sh, with run_train.py defaults where a script is silent:
# task: (script, d_model, layers, P, J, C_init, activation, bn_momentum, dropout, ssm_lr, lr_factor, wd, opt_config,
#        dt_global, clip_eigs, dt_min, batch, epochs, warmup_end, jax_seed)
S5_SCRIPTS = {
    "listops": ("run_lra_listops.sh", 128, 8, 16, 8, "lecun_normal", "half_glu2", 0.95, 0.0, 0.001, 3, 0.04,
                "BfastandCdecay", False, False, 0.001, 50, 40, 1, 6554595),
    "text": ("run_lra_imdb.sh", 256, 6, 192, 12, "lecun_normal", "half_glu2", 0.95, 0.1, 0.001, 4, 0.07, "standard",
             True, False, 0.001, 50, 35, 0, 8825365),
    "retrieval": ("run_lra_aan.sh", 128, 6, 256, 16, "trunc_standard_normal", "half_glu1", 0.95, 0.0, 0.001, 2, 0.05,
                  "standard", True, False, 0.001, 32, 20, 1, 5464368),
    "image": ("run_lra_cifar.sh", 512, 6, 384, 3, "lecun_normal", "half_glu1", 0.95, 0.1, 0.001, 4.5, 0.07,
              "BfastandCdecay", False, True, 0.001, 50, 250, 1, 16416),
    "pathfinder": ("run_lra_pathfinder.sh", 192, 6, 256, 8, "trunc_standard_normal", "half_glu1", 0.9, 0.05, 0.0009, 5,
                   0.03, "standard", False, False, 0.001, 64, 200, 1, 8180844),
    "pathx": ("run_lra_pathx.sh", 128, 6, 256, 16, "complex_normal", "half_glu1", 0.9, 0.0, 0.0006, 3, 0.06,
              "BandCdecay", False, False, 0.0001, 32, 75, 1, 6429262),
}


@pytest.mark.parametrize("task", list(S5_SCRIPTS))
def test_s5_presets_hold_the_lra_script_settings(task: str) -> None:
    (script, d, layers, P, J, C_init, act, bn_m, drop, ssm_lr, factor, wd, opt_config, dt_global, clip, dt_min, batch,
     epochs, warmup_end, seed) = S5_SCRIPTS[task]
    cfg = compose_config([f"experiment=lra/s5-{task}", "paths.output_dir=/tmp/lra_bench_presets"])
    bb = cfg.model.net.backbone
    assert cfg.model.name == "s5" and bb._target_ == "lra_bench.models.ssm.s5.S5Encoder"
    assert (cfg.model.d_model, bb.n_layers, bb.d_state, bb.blocks, bb.C_init, bb.activation) == (d, layers, P, J, C_init, act)
    assert (bb.bn_momentum, bb.dropout, bb.opt_config, bb.dt_global, bb.clip_eigs, bb.dt_min, bb.dt_max) == (
        bn_m, drop, opt_config, dt_global, clip, dt_min, 0.1)
    assert (bb.conj_sym, bb.bidirectional, bb.discretization, bb.prenorm, bb.norm) == (True, True, "zoh", True, "batch")
    assert bb.lr_factor == factor and cfg.optimizer.lr == pytest.approx(factor * ssm_lr) and bb.lr == cfg.optimizer.lr
    assert (cfg.optimizer.weight_decay, list(cfg.optimizer.betas), cfg.optimizer.no_decay_norm_bias_embedding) == (
        wd, [0.9, 0.999], False)
    assert (cfg.task.batch_size, cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.seed) == (batch, epochs, None, seed)
    assert (cfg.scheduler.decay, cfg.scheduler.final_lr_ratio) == ("cosine", 0.0)
    assert cfg.scheduler.warmup_fraction == pytest.approx(warmup_end / epochs)
    assert (cfg.model.net.pooling, cfg.model.net.head_hidden) == ("mean", d if task == "retrieval" else 0)
    assert cfg.task.datamodule.drop_last  # S5 make_data_loader (s5/dataloading.py:28)
    if task == "listops":  # S4's loader as S5 uses it (s5/dataloaders/lra.py:228-230): l_max 2048 with <eos>
        assert (cfg.task.max_length, cfg.task.vocab_size, cfg.task.datamodule.append_eos) == (2048, 18, True)
    if task in ("text", "retrieval"):
        assert cfg.task.datamodule.tokenizer == "chars" and cfg.task.datamodule.append_eos and cfg.task.vocab_size is None
        assert cfg.task.max_length == (4096 if task == "text" else 4000)
    if task == "retrieval":
        assert (cfg.model.net.pair_features, cfg.model.net.head_activation) == ("nli", "gelu_tanh")
    if task in ("pathfinder", "pathx"):
        assert (cfg.task.input, cfg.task.pixel_mean, cfg.task.pixel_std, cfg.task.datamodule.split) == ("real", 0.5, 0.5, "random")
    if task == "image":
        assert (cfg.task.input, round(cfg.task.pixel_mean * 255, 1), round(cfg.task.pixel_std * 255, 1)) == ("real", 122.6, 61.0)
    assert script in open(f"conf/experiment/lra/s5-{task}.yaml").read().splitlines()[1]  # the header cites it



@pytest.mark.parametrize("task, fan_in", [("listops", 20), ("text", None), ("retrieval", None)])
def test_token_presets_embed_one_hot_tokens_with_a_flax_dense(task: str, fan_in: int | None) -> None:
    """S5: one_hot (s5/train_helpers.py:311) into nn.Dense (s5/seq_model.py:39); in_dim 20 on ListOps
    (s5/dataloading.py:110), len(vocab) on Retrieval (238), a hard-coded 135 on Text (81: ours the vocabulary)."""
    assert_token_preset_embeds_one_hot_tokens_with_a_flax_dense("s5", task, fan_in)
