"""The FLOP count of a training step (bench's MFU numerator): equal to hand counts for five models, under a
generous ceiling for every model, complex matmuls and in-place GEMMs counted; an MFU above 100 % is flagged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lra_bench.benchmarks import bench
from lra_bench.benchmarks.flops import count_step_flops, hand_count, upper_bound
from lra_bench.benchmarks.model_configs import build_net, compose_train, length_overrides, resolve
from tests.conftest import compose_config

BATCH, LENGTH = 2, 64
EXTRA = {"mega_chunk": ["model.net.backbone.chunk_size=16"],  # 4 chunks of 16 at L = 64
         "luna": ["model.net.backbone.d_qkv=null"]}  # Luna's projections are d_model wide
HAND_TOLERANCE = 1e-3  # relative: the hand counts leave out nothing the counter counts


def small_step(model: str, layers: int = 2):
    """The model's Text preset shrunk (d_model 16, ``layers`` layers) at L = 64, batch 2: its config, net and one
    training step (forward, cross-entropy, backward) as the bench cell runs it."""
    extra = ["model.d_model=16", f"model.net.backbone.n_layers={layers}", *EXTRA.get(model, [])]
    resolved, composed = resolve(model, "text", extra)
    overrides = [*resolved.overrides, *length_overrides(composed, LENGTH), *extra]
    cfg = compose_train(overrides)
    torch.manual_seed(0)
    net, task = build_net(overrides)
    net.train()
    docs = 2 if task.pair else 1
    inputs = [t for _ in range(docs) for t in (torch.randint(1, int(task.vocab_size), (BATCH, LENGTH)),
                                               torch.full((BATCH,), LENGTH))]
    labels = torch.randint(0, int(task.num_classes), (BATCH,))

    def step() -> None:
        F.cross_entropy(net(*inputs).float(), labels).backward()

    return cfg, net, step


@pytest.mark.parametrize("model", ["transformer", "transformer_vanilla", "s4d", "s5", "lru", "mega_chunk"])
def test_counted_flops_equal_the_hand_count(model: str) -> None:
    """Before flops.py the counter missed the scans' in-place baddbmm_ (S5 and LRU counted about half their scan)
    and counted S4D's complex Vandermonde product as real (a quarter of it)."""
    cfg, _, step = small_step(model)
    counted = count_step_flops(step)
    assert counted == pytest.approx(hand_count(model, cfg, BATCH, LENGTH), rel=HAND_TOLERANCE)


@pytest.mark.slow
def test_every_bench_model_counts_under_a_generous_ceiling() -> None:
    """No model's count passes 10x (6 FLOPs per parameter per token + all-pairs attention + FFTs): a count that
    multiplies a term by the length or counts a loop's matmul per step would."""
    for model in compose_config([], config_name="bench").models:
        cfg, net, step = small_step(model, layers=1)
        counted = count_step_flops(step)
        assert 0 < counted <= upper_bound(cfg, net, BATCH, LENGTH), model


def test_complex_and_in_place_matmuls_are_counted() -> None:
    a, b = torch.randn(8, 4, dtype=torch.complex64), torch.randn(4, 5, dtype=torch.complex64)
    assert count_step_flops(lambda: a @ b) == 8 * 8 * 4 * 5  # 8 real FLOPs per complex multiply-add
    x, y, z = torch.randn(3, 8, 4), torch.randn(3, 4, 5), torch.zeros(3, 8, 5)
    assert count_step_flops(lambda: z.baddbmm_(x, y)) == 2 * 3 * 8 * 4 * 5
    m = torch.zeros(8, 5)
    assert count_step_flops(lambda: m.addmm_(x[0], y[0])) == 2 * 8 * 4 * 5


def test_an_mfu_above_100_percent_is_a_flagged_bug_not_a_figure() -> None:
    rows = [{"model": "lru", "length": 64, "tokens_per_s": 100.0, "train_s": 1.0, "train_min_s": 0.9, "train_max_s": 1.1,
             "memory_mb": 1.0, "flops_per_step": 2e9},
            {"model": "s4d", "length": 64, "tokens_per_s": 100.0, "train_s": 1.0, "memory_mb": 1.0, "flops_per_step": 5e8}]
    bench.add_ratios(rows, peak_flops=1e9)
    assert rows[0]["mfu"] is None and rows[0]["mfu_flag"].startswith("bug: counted 2.0 GFLOP/s > the measured peak 1.0")
    assert rows[1]["mfu"] == pytest.approx(0.5) and "mfu_flag" not in rows[1]
    md = bench.markdown(rows, [], {"device": "cpu", "precision": "fp32", "task": "text", "batch": 1, "repeats": 3,
                                   "warmup": 1, "peak_flops": 1e9})
    line = next(x for x in md.splitlines() if x.startswith("| lru | 64 |"))
    assert "bug: counted" in line and "%" not in line  # no MFU figure
    assert "| s4d | 64 | – | 0.5 | 50.0% |" in md
