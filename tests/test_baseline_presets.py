"""S4, S4D and Transformer presets hold the published settings (state-spaces/s4 configs/experiment/lra/s4-*.yaml at
HEAD for S4, s4-lra-*.yaml at d589d98 for S4D; google-research/long-range-arena lra_benchmarks/*/configs/
transformer_base.py); the efficient Transformers' Path-X presets follow the README's Path-X rule."""

from __future__ import annotations

import math

import pytest

from tests.conftest import compose_config

TRAIN_ROWS = {"listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000, "pathfinder": 160_000, "pathx": 160_000}

# task: d_model, d_state, prenorm, dropout, n_ssm, SSM lr {dt, A, B, C}, lr, batch, epochs, dt_min, seed
S4 = {
    "listops": (256, 4, False, 0.0, 1, {"dt": None, "A": 1e-3, "B": 1e-3, "C": None}, 0.01, 32, 40, 1e-3, 3333),
    "text": (256, 4, True, 0.0, 1, {"dt": None, "A": 1e-3, "B": 1e-3, "C": None}, 0.01, 16, 32, 1e-3, 3333),
    "retrieval": (256, 4, True, 0.0, 1, {"dt": None, "A": 1e-3, "B": 1e-3, "C": None}, 0.01, 64, 20, 1e-3, 3333),
    "image": (512, 64, False, 0.1, 1, 1e-3, 0.01, 50, 200, 1e-3, 2222),
    "pathfinder": (256, 64, True, 0.0, None, 1e-3, 0.004, 64, 200, 1e-3, 3333),
    "pathx": (256, 64, True, 0.0, None, 1e-3, 0.001, 16, 50, 1e-4, 3333),
}
# S4's hand-set schedule lengths and warmups (scheduler.num_training_steps / num_warmup_steps of each
# state-spaces/s4 configs/experiment/lra/s4-*.yaml). With drop_last the run itself is epochs x floor(rows / batch):
# the same except Text (49,984 run vs 50,000 scheduled) and Retrieval (45,960 vs 50,000: the lr ends near 2% of peak).
S4_SCHEDULE = {"listops": (120_000, 12_000), "text": (50_000, 5_000), "retrieval": (50_000, 5_000), "image": (180_000, 18_000),
               "pathfinder": (500_000, 50_000), "pathx": (500_000, 50_000)}
S4_RUN_STEPS = {"listops": 120_000, "text": 49_984, "retrieval": 45_960, "image": 180_000, "pathfinder": 500_000, "pathx": 500_000}

# task: layers, emb, heads, qkv, mlp, dropout, attention dropout, pooling, positions, batch, lr (normalised), wd,
#       steps, warmup, decay, clip, head hidden
LRA_TRANSFORMER = {
    # ListOps: base_listops_config.py 6 layers, MLP 2048 (LRA's train.py does not pass tied_weights: untied)
    "listops": (6, 512, 8, 512, 2048, 0.1, 0.1, "cls", "sinusoidal", 32, 0.05 / math.sqrt(1000), 0.1, 5000, 1000, "rsqrt", None, 2048),
    "text": (4, 256, 4, 256, 1024, 0.1, 0.1, "cls", "sinusoidal", 32, 0.05 / math.sqrt(8000), 0.1, 20_000, 8000, "rsqrt", None, 1024),
    "retrieval": (4, 128, 4, 128, 512, 0.1, 0.1, "first", "sinusoidal", 32, 0.05 / math.sqrt(8000), 0.1, 5000, 8000, "rsqrt", None, [512, 256]),
    # Image: cifar10/transformer_base.py at HEAD, as ee6649e set it (emb 128, 8 heads, qkv 64, MLP 128)
    "image": (1, 128, 8, 64, 128, 0.3, 0.2, "cls", "learned", 256, 5e-4, 0.0, 35_000, 175, "cosine", None, 128),
    # Pathfinder: pathfinder32/transformer_base.py at HEAD, as ee6649e set it (4 layers, emb 32, qkv 16, MLP 32)
    "pathfinder": (4, 32, 4, 16, 32, 0.2, 0.1, "mean", "sinusoidal", 512, 1e-3, 0.0, 62_400, 312, "cosine", None, 32),
    # Path-X: base_pathfinder128_config.py line 39, mlp_dim = qkv_dim * 2 = 32 (block MLP and classifier hidden layer)
    "pathx": (1, 32, 2, 16, 32, 0.1, 0.1, "mean", "learned", 64, 1e-3, 0.0, 500_000, 2500, "cosine", 1.0, 32),
}


def compose(experiment: str):
    return compose_config([f"experiment=lra/{experiment}", "paths.output_dir=/tmp/lra_bench_presets"])


# S4D: the S4D paper's setting, state-spaces/s4 d589d98 configs/experiment/lra/s4-lra-*.yaml run with mode=diag.
# task: d_model, layers, prenorm, norm, dropout, n_ssm (None: one per channel, upstream's ${..d_model} or 256 = H), SSM lr {dt, A, B, C}, lr, weight decay, batch, epochs, dt_min,
#       seed, pooling, (num_training_steps, num_warmup_steps), pixel (mean, std)
_DICT_LR = {"dt": None, "A": 1e-3, "B": 1e-3, "C": None}
S4D = {
    "listops": (128, 8, False, "batch", 0.0, None, _DICT_LR, 0.01, 0.05, 50, 40, 1e-3, 2222, "mean", (80_000, 1000), None),
    "text": (256, 6, True, "batch", 0.0, None, _DICT_LR, 0.01, 0.05, 16, 32, 1e-3, 2222, "mean", (50_000, 1000), None),
    "retrieval": (256, 6, True, "batch", 0.0, None, _DICT_LR, 0.01, 0.05, 64, 20, 1e-3, 2222, "mean", (50_000, 2500), None),
    "image": (512, 6, False, "layer", 0.1, 2, _DICT_LR, 0.01, 0.05, 50, 200, 1e-3, 2222, "mean", (200_000, 1000),
              (122.6 / 255, 61 / 255)),
    # scalar SSM lr 1e-3 (Delta, A, B); C at the global lr; the decoder reads the last position
    "pathfinder": (256, 6, True, "batch", 0.0, None, {"dt": 1e-3, "A": 1e-3, "B": 1e-3, "C": None}, 0.004, 0.03, 64, 200,
                   1e-3, 2222, "last", (500_000, 2500), (0.5, 0.5)),
    "pathx": (256, 6, True, "batch", 0.0, None, {"dt": 5e-4, "A": 5e-4, "B": 5e-4, "C": None}, 5e-4, 0.05, 16, 50, 1e-4,
              1112, "mean", (500_000, 10_000), (0.5, 0.5)),
}


@pytest.mark.parametrize("task", list(S4))
def test_s4_presets_hold_the_published_settings(task: str) -> None:
    d, n, prenorm, dropout, n_ssm, ssm_lr, lr, batch, epochs, dt_min, seed = S4[task]
    cfg = compose(f"s4-{task}")
    bb = cfg.model.net.backbone
    assert cfg.model.name == "s4" and bb.mode == "dplr" and bb.init == "legs"
    assert (cfg.model.d_model, bb.n_layers, bb.d_state, bb.prenorm, bb.dropout, bb.n_ssm) == (d, 6, n, prenorm, dropout, n_ssm)
    assert (bb.norm, bb.bidirectional, bb.dt_min, bb.dt_max) == ("batch", True, dt_min, 0.1)
    assert (bb.lr if isinstance(ssm_lr, float) else dict(bb.lr)) == ssm_lr
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.task.batch_size, cfg.trainer.max_epochs) == (lr, 0.05, batch, epochs)
    assert (cfg.scheduler.decay, cfg.seed) == ("cosine", seed)
    assert (cfg.scheduler.total_steps, cfg.scheduler.warmup_steps, cfg.scheduler.warmup_fraction) == (*S4_SCHEDULE[task], None)
    assert cfg.task.datamodule.drop_last is True
    assert cfg.model.net.pooling == "mean"
    assert (bb.disc, bb.dt_transform, bb.b_clip, bb.c_init, bb.decay_norm_bias) == ("zoh", "softplus", 2.0, "normal", False)
    assert epochs * (TRAIN_ROWS[task] // batch) == S4_RUN_STEPS[task]
    if task == "listops":  # S4: l_max 2048 including an appended <eos>, vocabulary 18
        assert (cfg.task.max_length, cfg.task.vocab_size, cfg.task.datamodule.append_eos) == (2048, 18, True)
    if task in ("text", "retrieval"):
        assert cfg.task.datamodule.tokenizer == "chars" and cfg.task.datamodule.append_eos and cfg.task.vocab_size is None
    if task == "retrieval":
        assert cfg.model.net.pair_features == "nli"
    if task == "image":
        assert (cfg.task.input, round(cfg.task.pixel_mean * 255, 1), round(cfg.task.pixel_std * 255, 1)) == ("real", 122.6, 61.0)
    if task in ("pathfinder", "pathx"):
        assert (cfg.task.input, cfg.task.pixel_mean, cfg.task.pixel_std, cfg.task.datamodule.split) == ("real", 0.0, 1.0, "random")


@pytest.mark.parametrize("task", list(S4D))
def test_s4d_presets_hold_the_s4d_papers_settings(task: str) -> None:
    """state-spaces/s4 d589d98: the experiment configs, SSKernelDiag's defaults (bilinear, Delta = exp(log_dt)),
    hippo.nplr without B_clip, C ~ CN(0, 1) * B, and no optimizer_param_grouping (biases and norms decayed)."""
    d, layers, prenorm, norm, dropout, n_ssm, ssm_lr, lr, wd, batch, epochs, dt_min, seed, pooling, sched, pixel = S4D[task]
    cfg = compose(f"s4d-{task}")
    bb = cfg.model.net.backbone
    assert cfg.model.name == "s4d" and bb.mode == "diag" and bb.init == "legs"
    assert (cfg.model.d_model, bb.n_layers, bb.d_state, bb.prenorm, bb.norm, bb.dropout, bb.n_ssm) == (
        d, layers, 64, prenorm, norm, dropout, n_ssm)
    assert (bb.bidirectional, bb.dt_min, bb.dt_max, dict(bb.lr)) == (True, dt_min, 0.1, ssm_lr)
    assert (bb.disc, bb.dt_transform, bb.b_clip, bb.c_init, bb.decay_norm_bias) == ("bilinear", "exp", None, "normal_times_b", True)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.task.batch_size, cfg.trainer.max_epochs) == (lr, wd, batch, epochs)
    assert (cfg.scheduler.decay, cfg.scheduler.total_steps, cfg.scheduler.warmup_steps, cfg.scheduler.warmup_fraction) == (
        "cosine", *sched, None)
    assert (cfg.seed, cfg.model.net.pooling, cfg.task.datamodule.drop_last, cfg.trainer.gradient_clip_val) == (seed, pooling, True, None)
    if pixel is not None:
        assert (cfg.task.input, cfg.task.pixel_mean, cfg.task.pixel_std) == ("real", pytest.approx(pixel[0]), pytest.approx(pixel[1]))
    if task == "listops":
        assert (cfg.task.max_length, cfg.task.vocab_size, cfg.task.datamodule.append_eos) == (2048, 18, True)
    if task in ("text", "retrieval"):
        assert cfg.task.datamodule.tokenizer == "chars" and cfg.task.datamodule.append_eos and cfg.task.vocab_size is None
        assert cfg.task.max_length == (4096 if task == "text" else 4000)
    if task == "retrieval":
        assert (cfg.model.net.pair_features, cfg.model.net.head_hidden) == ("nli", 256)
    if task in ("pathfinder", "pathx"):
        assert cfg.task.datamodule.split == "random"


@pytest.mark.parametrize("task", list(LRA_TRANSFORMER))
def test_transformer_presets_hold_the_lra_settings(task: str) -> None:
    (layers, emb, heads, qkv, mlp, drop, attn, pool, pos, batch, lr, wd, steps, warmup, decay, clip,
     head) = LRA_TRANSFORMER[task]
    cfg = compose(f"transformer-{task}")
    bb, net = cfg.model.net.backbone, cfg.model.net
    assert (bb.n_layers, cfg.model.d_model, bb.n_heads, bb.d_qkv, bb.d_ff) == (layers, emb, heads, qkv, mlp)
    assert (bb.dropout, bb.attn_dropout, net.pooling, bb.positions, bb.prenorm) == (drop, attn, pool, pos, True)
    assert (net.head_hidden if isinstance(head, int) else list(net.head_hidden)) == head and net.head_activation == "relu"
    assert net.embed_init_std == 1.0 and cfg.task.batch_size == batch
    assert cfg.optimizer.lr == pytest.approx(lr, rel=1e-12) and cfg.optimizer.weight_decay == wd
    assert list(cfg.optimizer.betas) == [0.9, 0.98] and cfg.optimizer.eps == 1e-9
    assert (cfg.trainer.max_steps, cfg.scheduler.warmup_steps, cfg.scheduler.decay, cfg.trainer.gradient_clip_val) == (steps, warmup, decay, clip)
    # LRA's inputs > 0 mask (black pixels hidden) is lra_code=true's; by default pixel 0 is data
    assert net.lra_code is False
    if task in ("image", "pathfinder", "pathx"):
        assert cfg.task.input == "tokens"
    if task == "retrieval":
        assert bb.max_length == 4000  # no CLS token: the dual encoder reads position 0


EFFICIENT = ["local", "sparse_transformer", "longformer", "linformer", "reformer", "sinkhorn", "synthesizer", "bigbird",
             "linear_transformer", "performer"]
MODEL_KEYS = ("d_model", "net.head_hidden", "net.lra_code", "net.backbone.n_layers", "net.backbone.n_heads",
              "net.backbone.d_qkv", "net.backbone.d_ff", "net.backbone.dropout", "net.backbone.attention",
              "net.backbone.attn_dropout")  # 0.1 in both LRA base configs; 0 where LRA's mechanism never applies it


@pytest.mark.parametrize("model", EFFICIENT)
def test_efficient_pathx_presets_follow_the_path_x_rule(model: str) -> None:
    """README: LRA configures only the Transformer on Path-X, so an efficient model's Path-X preset is the model's
    Pathfinder settings (sizes, dropout, mechanism options) on the Transformer's Path-X preset (batch, schedule,
    steps, clipping, positions, pooling)."""
    from omegaconf import OmegaConf

    cfg, pathfinder, base = compose(f"{model}-pathx"), compose(f"{model}-pathfinder"), compose("transformer-pathx")
    for key in MODEL_KEYS:
        assert OmegaConf.select(cfg.model, key) == OmegaConf.select(pathfinder.model, key), key
    for key in ("net.pooling", "net.backbone.positions", "net.backbone.max_length"):
        assert OmegaConf.select(cfg.model, key) == OmegaConf.select(base.model, key), key
    assert (cfg.optimizer, cfg.scheduler, cfg.trainer, cfg.task) == (base.optimizer, base.scheduler, base.trainer, base.task)
