"""The Mega and Mega-chunk presets hold the published hyper-parameters (facebookresearch/mega
examples/mega/README.lra.md, fairseq/models/lra/model.py, Mega paper Table 8)."""

from __future__ import annotations

import math

import pytest
from hydra.utils import instantiate

from lra_bench.training.callbacks import count_parameters
from tests.conftest import compose_config

# task: layers, D, H (= F), Z, N, truncation, attention, norm, prenorm, dropout, lr, weight decay,
#       effective batch, updates, warmup, warmup power, chunk (Mega-chunk), pixel (mean, std) or None
PUBLISHED = {
    "listops": (6, 80, 160, 64, 16, 1024, "softmax", "layernorm", False, 0.1, 1e-3, 0.01, 64, 90_000, 3_000, 1, 128, None),
    "text": (4, 128, 256, 64, 16, 1024, "softmax", "scalenorm", False, 0.1, 4e-3, 0.01, 50, 25_000, 10_000, 1, 128, None),
    "retrieval": (6, 128, 256, 64, 16, 1024, "softmax", "scalenorm", False, 0.1, 3e-3, 0.04, 64, 91_960, 10_000, 1, 128, None),
    "image": (8, 160, 320, 96, 16, 1024, "laplace", "batchnorm", True, 0.0, 1e-2, 0.02, 50, 180_000, 9_000, 1, 128, (0.48, 0.24)),
    "pathfinder": (6, 128, 256, 64, 16, 1024, "laplace", "batchnorm", True, 0.0, 1e-2, 0.01, 128, 250_000, 50_000, 1, 128, (0.5, 0.5)),
    "pathx": (4, 64, 128, 32, 16, 4096, "laplace", "syncbatchnorm", True, 0.0, 1e-2, 0.01, 128, 125_000, 25_000, 2, 4096, (0.5, 0.5)),
}
TRAIN_ROWS = {"listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000, "pathfinder": 160_000, "pathx": 160_000}

# Non-embedding parameters by hand. Per layer:
#   EMA 4 * (2D * N) + D   [delta, alpha, beta, gamma: (2D, N) each; omega: D]
#   v_proj D*H + H;  mx_proj D*(2D + Z + H) + (2D + Z + H);  h_proj H*D + D;  q/k gamma, beta 4Z
#   rel-pos bias 2M - 1;  norm (layernorm / batchnorm 2D, scalenorm 1);  NFFN D*F + F + F*D + D + norm
# plus the final norm (pre-norm only), the head (cin*2D + 2D) + 2D*classes, and for pixels the
# real-number embedding's 2D (only token tables are left out).
HAND_COUNTS = {
    # D 80, H 160, Z 64, N 16, M 2002, layernorm, post-norm, 6 layers, 10 classes
    "listops": 6 * ((4 * 160 * 16 + 80) + (80 * 160 + 160) + (80 * 384 + 384) + (160 * 80 + 80) + 4 * 64 + (2 * 2002 - 1)
                    + 160 + (80 * 160 + 160) + (160 * 80 + 80) + 160)
    + (80 * 160 + 160) + 160 * 10,  # = 6 * 97_683 + 14_560 = 600_658
    # D 128, H 256, Z 64, N 16, M 4002, scalenorm, post-norm, 4 layers, 2 classes
    "text": 4 * ((4 * 256 * 16 + 128) + (128 * 256 + 256) + (128 * 576 + 576) + (256 * 128 + 128) + 4 * 64 + (2 * 4002 - 1)
                 + 1 + (128 * 256 + 256) + (256 * 128 + 128) + 1)
    + (128 * 256 + 256) + 256 * 2,  # = 4 * 230_917 + 33_536 = 957_204
    # as Text with 6 layers; the head sees [u, v]: cin = 256
    "retrieval": 6 * 230_917 + (256 * 256 + 256) + 256 * 2,  # = 1_385_502 + 66_304 = 1_451_806
    # D 160, H 320, Z 96, N 16, M 1024, batchnorm, pre-norm, 8 layers, 10 classes, pixel embedding 2 * 160
    "image": 8 * ((4 * 320 * 16 + 160) + (160 * 320 + 320) + (160 * 736 + 736) + (320 * 160 + 160) + 4 * 96 + (2 * 1024 - 1)
                  + 320 + (160 * 320 + 320) + (320 * 160 + 160) + 320)
    + 320 + (160 * 320 + 320) + 320 * 10 + 320,  # = 8 * 347_967 + 320 + 54_720 + 320 = 2_839_096
    # D 128, H 256, Z 64, N 16, M 1024, batchnorm, pre-norm, 6 layers, 2 classes, pixel embedding 256
    "pathfinder": 6 * ((4 * 256 * 16 + 128) + (128 * 256 + 256) + (128 * 576 + 576) + (256 * 128 + 128) + 4 * 64 + (2 * 1024 - 1)
                       + 256 + (128 * 256 + 256) + (256 * 128 + 128) + 256)
    + 256 + (128 * 256 + 256) + 256 * 2 + 256,  # = 6 * 225_471 + 256 + 33_536 + 256 = 1_386_874
    # D 64, H 128, Z 32, N 16, M 16384, sync batchnorm, pre-norm, 4 layers, 2 classes, pixel embedding 128
    "pathx": 4 * ((4 * 128 * 16 + 64) + (64 * 128 + 128) + (64 * 288 + 288) + (128 * 64 + 64) + 4 * 32 + (2 * 16384 - 1)
                  + 128 + (64 * 128 + 128) + (128 * 64 + 64) + 128)
    + 128 + (64 * 128 + 128) + 128 * 2 + 128,  # = 4 * 93_279 + 128 + 8_576 + 128 = 381_948
}
# Mega-chunk differs only in the rel-pos bias: 2C - 1 entries instead of 2M - 1.
CHUNK_DELTA = {"listops": 6 * (255 - 4003), "text": 4 * (255 - 8003), "retrieval": 6 * (255 - 8003),
               "image": 8 * (255 - 2047), "pathfinder": 6 * (255 - 2047), "pathx": 4 * (8191 - 32767)}


def compose(model: str, task: str):
    return compose_config([f"experiment=lra/{model}-{task}", "paths.output_dir=/tmp/lra_bench_presets"])


@pytest.mark.parametrize("task", list(PUBLISHED))
@pytest.mark.parametrize("model", ["mega", "mega_chunk"])
def test_presets_hold_the_published_values(model: str, task: str) -> None:
    (layers, d, h, z, n, trunc, attention, norm, prenorm, dropout, lr, wd, batch, updates, warmup, power, chunk,
     pixels) = PUBLISHED[task]
    cfg = compose(model, task)
    bb = cfg.model.net.backbone
    assert (bb.n_layers, cfg.model.d_model, bb.d_hidden, bb.d_ffn, bb.d_qk, bb.n_dim) == (layers, d, h, h, z, n)
    assert (bb.truncation, bb.attention, bb.norm, bb.prenorm) == (trunc, attention, norm, prenorm)
    assert (cfg.model.dropout, bb.attn_dropout, bb.hidden_dropout) == (dropout, 0.0, 0.0)
    assert bb.chunk_size == (chunk if model == "mega_chunk" else -1)
    assert cfg.model.net.head_hidden == 2 * d and cfg.model.net.head_activation == "gelu" and not cfg.model.net.head_out_bias
    assert cfg.model.net.pooling == "mean" and cfg.model.net.embed_init_std is None
    # shared optimisation: AdamW on every parameter, (0.9, 0.98), eps 1e-8, clip 1.0, warmup from 1e-7, linear to 0
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (lr, wd)
    assert list(cfg.optimizer.betas) == [0.9, 0.98] and cfg.optimizer.eps == 1e-8
    assert cfg.optimizer.no_decay_norm_bias_embedding is False
    assert cfg.trainer.gradient_clip_val == 1.0
    assert (cfg.scheduler.decay, cfg.scheduler.warmup_init_lr, cfg.scheduler.final_lr_ratio) == ("linear", 1e-7, 0.0)
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.warmup_power) == (warmup, power)
    effective = cfg.task.batch_size * cfg.trainer.accumulate_grad_batches * cfg.trainer.devices
    assert effective == batch
    # the schedule length Lightning derives: epochs x ceil(ceil(rows / batch) / accumulation)
    per_epoch = math.ceil(math.ceil(TRAIN_ROWS[task] / cfg.task.batch_size) / cfg.trainer.accumulate_grad_batches)
    assert cfg.trainer.max_epochs * per_epoch == updates
    if pixels:
        assert (cfg.task.input, cfg.task.pixel_mean, cfg.task.pixel_std) == ("real", *pixels)
        assert cfg.task.datamodule.get("val_split", "random") == "random" and cfg.task.datamodule.get("split", "random") == "random"
    else:
        assert cfg.task.input == "tokens"


@pytest.mark.parametrize("task", list(PUBLISHED))
def test_non_embedding_parameter_counts_match_the_hand_count(task: str) -> None:
    for model, expected in (("mega", HAND_COUNTS[task]), ("mega_chunk", HAND_COUNTS[task] + CHUNK_DELTA[task])):
        cfg = compose(model, task)
        net = instantiate(cfg.model.net)
        assert count_parameters(net)["params_non_embedding"] == expected, (model, task)


def test_hand_counts_are_the_published_sizes() -> None:
    """Mega paper Table 8: 0.60M, 0.96M, 1.45M, 2.84M, 1.39M, 0.38M (excluding token embeddings)."""
    published = {"listops": 0.60, "text": 0.96, "retrieval": 1.45, "image": 2.84, "pathfinder": 1.39, "pathx": 0.38}
    for task, millions in published.items():
        assert round(HAND_COUNTS[task] / 1e6, 2) == millions
