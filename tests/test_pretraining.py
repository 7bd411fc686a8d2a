"""Self-pretraining (``pretrain=spt``, lra_bench/pretraining): stage 1 reads no label and no held-out row, the
denoising objectives score what the paper scores, the objective follows the backbone, stage 2 starts from exactly
the pretrained encoder, bad options get one line, and the token budget counts what was trained on."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn

from lra_bench import train as train_mod
from lra_bench.errors import ConfigError
from lra_bench.models.classifier import SequenceClassifier
from lra_bench.models.attention.transformer import TransformerEncoder
from lra_bench.models.ssm.mamba import MambaEncoder
from lra_bench.models.ssm.s4 import S4Encoder
from lra_bench.pretraining import stages
from lra_bench.pretraining.data import InputBatch, InputPairBatch, PretrainData
from lra_bench.pretraining.module import PretrainModule
from lra_bench.pretraining.objectives import Denoiser, is_causal, resolve_objective
from lra_bench.training.options import check_options
from lra_bench.training.run_state import checkpoint_step
from tests.conftest import TINY_RUN, compose_config

# ---------------------------------------------------------------------------------------------------------------------
# 1. Stage 1 reads the training inputs only


class Leaks(list):
    """What stage 1 touched that it must not (each trap records here before raising: a leak swallowed is still seen)."""

    def hit(self, what: str) -> AssertionError:
        self.append(what)
        return AssertionError(f"stage 1 read {what}")


class HeldOutSplit:
    """A validation or test split, as stage 1 must see it: not at all."""

    def __init__(self, split: str, leaks: Leaks):
        self._split, self._leaks = split, leaks

    def __len__(self) -> int:
        raise self._leaks.hit(f"the length of the {self._split} split")

    def __getitem__(self, index: int):
        raise self._leaks.hit(f"{self._split} row {index}")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._leaks.hit(f"{self._split}.{name}")


class UnreadableLabels:
    """A training split's label array: its length is known, any value read is a leak."""

    def __init__(self, n: int, leaks: Leaks):
        self._n, self._leaks = n, leaks

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        raise self._leaks.hit(f"train label {index}")

    def __iter__(self):
        raise self._leaks.hit("the train labels")

    def __array__(self, *args, **kwargs):
        raise self._leaks.hit("the train labels as an array")


class LabelFreeTrain:
    """The training split with ``inputs(i)`` only: its ``dataset[i]`` (ids and label) and its labels are traps."""

    def __init__(self, dataset, leaks: Leaks):
        self._dataset, self._leaks = dataset, leaks
        self.labels = UnreadableLabels(len(dataset), leaks)

    def __len__(self) -> int:
        return len(self._dataset)

    def inputs(self, index: int):
        return self._dataset.inputs(index)

    def __getitem__(self, index: int):
        raise self._leaks.hit(f"train row {index} with its label")

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


@pytest.fixture
def stage_one_traps(monkeypatch: pytest.MonkeyPatch) -> tuple[Leaks, list]:
    """While stage 1 runs: the task data it wraps opens its val/test splits as traps and its train split with the
    labels trapped, and the batches its module trains on are kept. Stage 2 builds its own datamodule and module."""
    leaks, batches = Leaks(), []
    init, step = PretrainData.__init__, PretrainModule.training_step

    def trapped_init(self: PretrainData, task_data, batch_size: int | None = None) -> None:
        init(self, task_data, batch_size)
        assert not task_data.datasets  # nothing opened yet: every split stage 1 gets goes through the traps
        open_split = task_data.open_split
        task_data.open_split = lambda split: (LabelFreeTrain(open_split(split), leaks) if split == "train"
                                              else HeldOutSplit(split, leaks))

    def recording_step(self: PretrainModule, batch, batch_idx: int):
        batches.append(batch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(PretrainData, "__init__", trapped_init)
    monkeypatch.setattr(PretrainModule, "training_step", recording_step)
    return leaks, batches


def rows(tokens: torch.Tensor, lengths: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(t[: int(n)].tolist()) for t, n in zip(tokens, lengths)]


# the paper's masking rates (section 2; conf/pretrain/spt.yaml): 10% ListOps, 15% Retrieval, 50% the pixel tasks
MASK_RATES = {"listops": 0.10, "pathfinder": 0.50, "retrieval": 0.15}
SPT_TASKS = {
    "listops": [],
    "pathfinder": ["task=pathfinder", "task.max_length=1024", "task.batch_size=4"],
    "retrieval": ["task=retrieval", "task.batch_size=4"],
}


# ListOps in make test; the pixel and pair tasks (their inputs readers) in make test-slow
@pytest.mark.parametrize("task", [pytest.param(t, marks=() if t == "listops" else pytest.mark.slow) for t in SPT_TASKS])
def test_stage_one_trains_on_the_training_inputs_only_never_a_label_or_a_held_out_row(
        task: str, run_config, all_tasks_root: Path, tmp_path: Path, stage_one_traps) -> None:
    leaks, batches = stage_one_traps
    cfg = run_config(*SPT_TASKS[task], "pretrain=spt", "pretrain.max_steps=3", "pretrain.batch_size=4",
                     "trainer.max_steps=2", "trainer.limit_val_batches=1")
    result = train_mod.train(cfg)  # stage 1 (trapped), then stage 2, which reads labels as any run does
    assert list(leaks) == []
    assert len(batches) == 3  # pretrain.max_steps optimizer steps, one batch each
    paired = task == "retrieval"
    for batch in batches:
        assert type(batch) is (InputPairBatch if paired else InputBatch) and not hasattr(batch, "labels")
        assert batch.tokens.size(0) == 4  # pretrain.batch_size, not the task's
    train = instantiate(cfg.task.datamodule)  # the training split read independently of the run
    train.setup()
    train = train.datasets["train"]
    documents = [set(), set()]
    for i in range(len(train)):
        for d, ids in enumerate(train.inputs(i)):
            documents[d].add(tuple(ids.tolist()))
    for batch in batches:
        assert set(rows(batch.tokens, batch.lengths)) <= documents[0]
        if paired:
            assert set(rows(batch.tokens2, batch.lengths2)) <= documents[1]
    stage1 = json.loads((Path(cfg.paths.output_dir) / "pretrain" / "result.json").read_text())
    tokens = sum(int(b.lengths.sum()) + (int(b.lengths2.sum()) if paired else 0) for b in batches)
    assert stage1["global_step"] == 3 and stage1["train/tokens_seen"] == tokens
    assert math.isfinite(stage1["pretrain/loss"])
    assert stage1["objective"] == "masked" and stage1["mask_rate"] == MASK_RATES[task]
    assert (Path(cfg.paths.output_dir) / "pretrain" / "encoder.pt").is_file()
    assert result["protocol"] == "spt" and result["pretrain/steps"] == 3 and result["pretrain/tokens_seen"] == tokens
    assert result["budget/total_steps"] == 3 + result["global_step"] and result["global_step"] == 2
    assert result["budget/total_tokens"] == tokens + result["train/tokens_seen"]


# ---------------------------------------------------------------------------------------------------------------------
# 2. The denoising objectives

D, VOCAB = 8, 20


class Recorder(nn.Module):
    """A backbone obeying the protocol that keeps its input and returns it with a mark of each position (so an
    output read one position off is seen), zero at pads."""

    def __init__(self, causal: bool | None = None):
        super().__init__()
        if causal is not None:
            self.causal = causal
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = (torch.arange(x.size(1))[None, :] < lengths[:, None])[..., None]
        out = (x + 0.01 * torch.arange(1, x.size(1) + 1, dtype=x.dtype)[None, :, None]) * real
        self.inputs.append(x.detach().clone())
        self.outputs.append(out.detach().clone())
        return out


def classifier(pooling: str = "mean", pair: bool = False, input: str = "tokens", causal: bool | None = None,
               vocab: int = VOCAB) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(Recorder(causal), D, num_classes=3, vocab_size=vocab, input=input,
                              padding_idx=0 if input == "tokens" else None, pooling=pooling, pair=pair,
                              pixel_mean=0.5, pixel_std=0.25)


def token_batch(lengths: list[int], vocab: int = VOCAB, seed: int = 1, low: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids in [low, vocab) with 0 at pads (the collate's padding), and their lengths."""
    gen = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    tokens = torch.randint(low, vocab, (len(lengths), max(lengths)), generator=gen)
    return tokens * (torch.arange(max(lengths))[None, :] < lengths_t[:, None]), lengths_t


def real_positions(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < lengths[:, None]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_masked_positions_get_the_mask_vector_and_only_they_are_scored_against_their_original_ids(pooling: str) -> None:
    net = classifier(pooling)
    den = Denoiser(net, "masked", mask_rate=0.3)
    tokens, lengths = token_batch([12, 5, 9, 1])
    torch.manual_seed(7)
    logits, targets = den(tokens, lengths)
    torch.manual_seed(7)  # the draw the Denoiser makes, made again: each real position masked w.p. mask_rate
    expected = (torch.rand(tokens.shape) < 0.3) & real_positions(lengths, tokens.size(1))
    assert expected.any() and (~expected & real_positions(lengths, tokens.size(1))).any()
    offset = 1 if pooling == "cls" else 0
    x = net.backbone.inputs[-1]
    assert x.shape == (4, 12 + offset, D)
    if offset:
        assert torch.equal(x[:, 0], net.cls.detach().expand(4, D))  # the CLS token first, never masked
    embedded = net.embedding(tokens).detach()
    for b in range(4):
        for t in range(tokens.size(1)):
            want = den.mask_vector.detach() if expected[b, t] else embedded[b, t]
            assert torch.equal(x[b, t + offset], want), (b, t)
    chosen = expected.nonzero().tolist()  # row-major, as the targets come
    assert torch.equal(targets, torch.tensor([int(tokens[b, t]) for b, t in chosen]))
    out = net.backbone.outputs[-1]
    assert torch.allclose(logits, den.decoder(torch.stack([out[b, t + offset] for b, t in chosen])))
    assert logits.shape == (len(chosen), VOCAB)


@pytest.mark.parametrize("input, rate", [("tokens", 0.15), ("real", 0.5)])
def test_the_empirical_mask_rate_is_the_configured_one_and_pads_are_never_masked(input: str, rate: float) -> None:
    den = Denoiser(classifier(input=input, vocab=256), "masked", mask_rate=rate)
    lengths = [64, 40, 17, 3, 64, 29, 50, 8]
    tokens, lengths_t = token_batch(lengths, vocab=256, low=0 if input == "real" else 1)
    real = real_positions(lengths_t, tokens.size(1))
    torch.manual_seed(0)
    masked = pads_masked = 0
    draws = 80
    for _ in range(draws):
        _, targets = den(tokens, lengths_t)
        hit = (den.classifier.backbone.inputs[-1] == den.mask_vector.detach()).all(-1)
        assert hit.sum() == targets.numel()  # every masked position scored, nothing else
        masked += int(hit.sum())
        pads_masked += int((hit & ~real).sum())
        den.classifier.backbone.inputs.clear()
        den.classifier.backbone.outputs.clear()
    n = draws * sum(lengths)
    z = (masked - n * rate) / math.sqrt(n * rate * (1 - rate))
    assert abs(z) < 4.5, f"{masked} of {n} positions masked: {masked / n:.4f}, configured {rate}"
    assert pads_masked == 0


def test_retrieval_pairs_pretrain_as_rows_of_their_own() -> None:
    net = classifier(pair=True)
    den = Denoiser(net, "masked", mask_rate=0.4)
    doc1, len1 = token_batch([6, 3], seed=2)
    doc2, len2 = token_batch([4, 9], seed=3)
    torch.manual_seed(5)
    logits, targets = den(doc1, len1, doc2, len2)
    x = net.backbone.inputs[-1]
    assert x.shape == (4, 9, D)  # 2B rows, padded to the longer document
    stacked = torch.zeros(4, 9, dtype=torch.long)
    stacked[:2, :6], stacked[2:, :9] = doc1, doc2
    lengths = torch.cat([len1, len2])
    hit = (x == den.mask_vector.detach()).all(-1)
    real = real_positions(lengths, 9)
    embedded = net.embedding(stacked).detach()
    assert not (hit & ~real).any() and hit.any()
    assert torch.equal(x[real & ~hit], embedded[real & ~hit])  # each document's own ids, row by row
    assert torch.equal(targets, stacked[hit]) and logits.shape == (int(hit.sum()), VOCAB)


def test_pixel_input_as_values_scores_256_levels_against_the_raw_pixel_ids() -> None:
    net = classifier(input="real", vocab=0)
    den = Denoiser(net, "masked", mask_rate=0.5)
    assert den.vocab == 256 and den.decoder.out_features == 256
    pixels = torch.tensor([[0, 255, 17, 128, 0, 3, 64, 200], [9, 0, 0, 250, 1, 2, 3, 4]])  # 0 is black, not a pad
    lengths = torch.tensor([8, 8])
    torch.manual_seed(1)
    logits, targets = den(pixels, lengths)
    x = net.backbone.inputs[-1]
    hit = (x == den.mask_vector.detach()).all(-1)
    emb = net.embedding
    values = ((pixels.float() / 255 - 0.5) / 0.25)[..., None] * emb.weight.detach() + emb.bias.detach()
    assert torch.allclose(x[~hit], values[~hit])  # unmasked pixels as the embedding normalises them
    assert torch.equal(targets, pixels[hit]) and logits.shape == (int(hit.sum()), 256)
    assert (targets == 0).any()  # a black pixel is data: masked and predicted like any other
    assert Denoiser(classifier(vocab=256), "masked").vocab == 256  # pixels as tokens: the 256-id table


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_causal_objective_scores_the_output_at_t_against_the_real_token_at_t_plus_one(pooling: str) -> None:
    net = classifier(pooling, causal=True)
    den = Denoiser(net, "causal")
    assert den.mask_vector is None
    tokens, lengths = token_batch([7, 2, 5, 1])
    logits, targets = den(tokens, lengths)
    offset = 1 if pooling == "cls" else 0
    x, out = net.backbone.inputs[-1], net.backbone.outputs[-1]
    assert torch.equal(x[:, offset:], net.embedding(tokens).detach())  # nothing masked
    pairs = [(b, t) for b in range(4) for t in range(int(lengths[b]) - 1)]  # t + 1 real: 6 + 1 + 4 + 0
    assert len(pairs) == 11
    assert torch.equal(targets, torch.tensor([int(tokens[b, t + 1]) for b, t in pairs]))
    assert torch.allclose(logits, den.decoder(torch.stack([out[b, t + offset] for b, t in pairs])))


# ---------------------------------------------------------------------------------------------------------------------
# 3. The objective follows the backbone


class CumulativeMean(nn.Module):
    """Causal by construction (each output averages the positions up to it), declaring nothing."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x.cumsum(1) / torch.arange(1, x.size(1) + 1)[None, :, None]


class WholeMean(nn.Module):
    """Bidirectional: every output sees the whole row. ``causal`` set: what it declares."""

    def __init__(self, causal: bool | None = None):
        super().__init__()
        if causal is not None:
            self.causal = causal

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x + x.mean(1, keepdim=True)


def test_the_probe_tells_causal_from_bidirectional_and_trusts_a_declaration() -> None:
    assert is_causal(CumulativeMean(), D) and not is_causal(WholeMean(), D)
    assert is_causal(WholeMean(causal=True), D)  # declared: trusted, not probed
    assert not is_causal(WholeMean(causal=False), D)
    assert resolve_objective("auto", CumulativeMean(), D) == "causal"
    assert resolve_objective("auto", WholeMean(), D) == "masked"
    assert resolve_objective("masked", CumulativeMean(), D) == "masked"  # asked for: allowed on a causal backbone
    assert resolve_objective("causal", WholeMean(causal=True), D) == "causal"
    with pytest.raises(ConfigError) as refused:
        resolve_objective("causal", WholeMean(), D)
    assert str(refused.value).startswith("pretrain.objective=causal: WholeMean is bidirectional")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("backbone", [
    lambda bidirectional: S4Encoder(16, n_layers=2, d_state=16, bidirectional=bidirectional),
    lambda bidirectional: MambaEncoder(16, n_layers=2, bidirectional=bidirectional),
], ids=["s4", "mamba"])
def test_built_in_backbones_get_causal_when_one_directional_and_masked_as_lra_builds_them(backbone) -> None:
    torch.manual_seed(0)
    assert resolve_objective("auto", backbone(False), 16) == "causal"
    assert resolve_objective("auto", backbone(True), 16) == "masked"
    assert resolve_objective("auto", TransformerEncoder(16, n_layers=1, n_heads=2, d_ff=32), 16) == "masked"


def test_a_causal_s4d_at_its_image_preset_size_is_causal_despite_float32_fft_roundoff() -> None:
    """conf/experiment/lra/s4d-image.yaml's backbone, one direction: its FFT convolution moves the first half's outputs
    by ~4e-6 of their scale when the second half changes (float32 roundoff, not a leak)."""
    torch.manual_seed(0)
    backbone = S4Encoder(512, n_layers=6, d_state=64, mode="diag", bidirectional=False, init="legs", disc="bilinear",
                         n_ssm=2, dt_transform="exp", norm="layer", prenorm=False, b_clip=None, c_init="normal_times_b")
    assert is_causal(backbone, 512)


def test_the_transformer_is_refused_the_causal_objective_through_the_run_config(run_config) -> None:
    cfg = run_config("pretrain=spt", "pretrain.objective=causal", "pretrain.max_steps=1")
    with pytest.raises(ConfigError, match=r"^pretrain\.objective=causal: TransformerEncoder is bidirectional"):
        train_mod.build(stages.stage_one_config(cfg), pretraining=True)


# ---------------------------------------------------------------------------------------------------------------------
# 4. Stage 2 starts from the pretrained encoder


def tiny_net(seed: int, d_model: int = 16, model: str = "transformer") -> SequenceClassifier:
    torch.manual_seed(seed)
    backbone = (TransformerEncoder(d_model, n_layers=1, n_heads=2, d_ff=32) if model == "transformer"
                else S4Encoder(d_model, n_layers=1, d_state=8))
    return SequenceClassifier(backbone, d_model, num_classes=10, vocab_size=VOCAB, head_hidden=32)


def test_stage_two_starts_with_exactly_the_encoder_and_a_fresh_head(tmp_path: Path) -> None:
    pretrained = tiny_net(seed=1)
    den = Denoiser(pretrained, "masked")
    state = den.encoder_state()
    assert not any(k.startswith(("head.", "decoder.", "mask_vector")) for k in state)
    path = tmp_path / stages.ENCODER
    stages.save_encoder(path, state, {"global_step": 3, "objective": "masked"})
    fresh = tiny_net(seed=2)
    head = {k: v.clone() for k, v in fresh.state_dict().items() if k.startswith("head.")}
    assert head and any(not torch.equal(v, pretrained.state_dict()[k]) for k, v in head.items())
    meta = stages.start_from_encoder(fresh, path)
    assert meta == {"global_step": 3, "objective": "masked"}
    loaded = fresh.state_dict()
    assert set(loaded) == set(state) | set(head)
    for k, v in loaded.items():
        assert torch.equal(v, head[k] if k.startswith("head.") else pretrained.state_dict()[k]), k


def test_a_changed_or_foreign_encoder_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / stages.ENCODER
    stages.save_encoder(path, Denoiser(tiny_net(seed=1), "masked").encoder_state(), {})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as tampered:
        stages.start_from_encoder(tiny_net(seed=2), path)
    message = str(tampered.value)
    assert message.startswith(f"{path}: its checksum") and "rerun=true" in message and "\n" not in message

    stages.save_encoder(path, Denoiser(tiny_net(seed=1), "masked").encoder_state(), {})
    for other in (tiny_net(2, d_model=24), tiny_net(2, model="s4")):  # another size, another model
        with pytest.raises(ConfigError) as foreign:
            stages.start_from_encoder(other, path)
        message = str(foreign.value)
        assert message.startswith(f"{path} does not fit this model") and "rerun=true" in message
        assert "\n" not in message


# ---------------------------------------------------------------------------------------------------------------------
# 5. Bad options


@pytest.fixture(scope="module")
def spt_config():
    """A tiny run with ``pretrain=spt`` as Hydra composes it (the option checks read no data)."""
    return compose_config([*TINY_RUN, "paths.data_dir=/nowhere", "paths.output_dir=/nowhere", "pretrain=spt"])


REMOVED = object()


BAD_OPTIONS = [
    ("pretrain.mask_rate", 0, r"pretrain\.mask_rate=0: must be a number in \(0, 1\)$"),
    ("pretrain.mask_rate", 1, r"pretrain\.mask_rate=1: must be a number in \(0, 1\)$"),
    ("pretrain.mask_rate", -0.1, r"pretrain\.mask_rate=-0\.1: must be a number in \(0, 1\)$"),
    ("pretrain.max_steps", 0,
     r"pretrain\.max_steps=0: must be null \(pretrain\.max_epochs decides\) or an integer >= 1$"),
    ("pretrain.max_epochs", 0, r"pretrain\.max_epochs=0: must be an integer >= 1 \(or set pretrain\.max_steps\)$"),
    ("pretrain.batch_size", 0, r"pretrain\.batch_size=0: must be null \(the task's\) or an integer >= 1$"),
    ("pretrain.objective", "foo", r"pretrain\.objective='foo': must be one of auto, masked, causal$"),
    ("pretrain.optimizer.lr", 0, r"pretrain\.optimizer\.lr=0: must be a number > 0 and finite$"),
    ("pretrain.optimizer.weight_decay", -0.1, r"pretrain\.optimizer\.weight_decay=-0\.1: must be a number >= 0"),
    ("pretrain.optimizer.betas", [0.9], r"pretrain\.optimizer\.betas=\[0\.9\]: must be two numbers in \[0, 1\)"),
    ("pretrain.optimizer.eps", -1e-8, r"pretrain\.optimizer\.eps=-1e-08: must be a number > 0 and finite$"),
    ("pretrain.scheduler.decay", "cosin", r"pretrain\.scheduler\.decay='cosin': must be one of linear, "),
    ("pretrain.scheduler.warmup_steps", -5, r"pretrain\.scheduler\.warmup_steps=-5: must be null or an integer >= 0$"),
    ("pretrain.gradient_clip_val", -1.0, r"pretrain\.gradient_clip_val=-1\.0: must be null or a number >= 0"),
    ("lra_code", True, r"pretrain=spt with lra_code=true: LRA's released code never self-pretrains .*; run SPT with "
                       r"lra_code=false$"),
    ("pretrain.by_task.listops", REMOVED, r"pretrain=spt: no recipe for task 'listops' \(pretrain\.by_task has text, "
                                          r"retrieval, image, pathfinder, pathx\); add pretrain\.by_task\.listops"),
]


@pytest.mark.parametrize("key, value, line", BAD_OPTIONS,
                         ids=[f"{k}={'removed' if v is REMOVED else v}" for k, v, _ in BAD_OPTIONS])
def test_a_bad_pretraining_option_is_refused_in_one_line(spt_config, key: str, value, line: str) -> None:
    check_options(spt_config)  # the recipe as composed passes: what follows is the one option's doing
    cfg = copy.deepcopy(spt_config)
    with open_dict(cfg):
        if value is REMOVED:
            del cfg.pretrain.by_task.listops
        else:
            OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as refused:
        check_options(cfg)
    message = str(refused.value)
    assert re.match(line, message) and "\n" not in message, message


# ---------------------------------------------------------------------------------------------------------------------
# 6. The token budget


def test_tokens_seen_is_the_sum_of_the_trained_rows_lengths_and_survives_a_resume(listops_root: Path,
                                                                                   tmp_path: Path) -> None:
    """Two epochs over the training split: every row twice, whatever the order, whether or not a kill and a resume
    fell in between. The lr is tiny, so validation accuracy stays flat and the best checkpoint (the one the test
    step loads) is the first epoch's, older than the run's end: the count is the run's, not that checkpoint's."""

    def config(*extra: str):
        return compose_config([*TINY_RUN, f"paths.data_dir={listops_root}", f"paths.output_dir={tmp_path / 'run'}",
                               "trainer.max_epochs=2", "checkpoint_every_n_steps=2", "optimizer.lr=1e-9",
                               "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *extra])

    data = instantiate(config().task.datamodule)
    data.setup()
    train = data.datasets["train"]
    lengths = [len(train.inputs(i)[0]) for i in range(len(train))]
    assert lengths == train.lengths.tolist() and len(set(lengths)) > 1  # rows of different lengths: batches have pads
    killed = config("+callbacks.kill._target_=tests.helpers.SignalAtStep", "+callbacks.kill.step=3")
    assert train_mod.train(killed) == {"preempted": 15}
    resumed = train_mod.train(config())  # the same command again: resumes mid-epoch from the checkpoint
    assert checkpoint_step(Path(resumed["best_checkpoint"])) < resumed["global_step"] == 12
    assert resumed["train/tokens_seen"] == 2 * sum(lengths)
