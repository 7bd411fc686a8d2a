"""Stage 1's denoising objectives and the per-position head, around any classifier's backbone.

``Denoiser`` holds the task's ``SequenceClassifier`` (embedding and backbone: what stage 2 keeps), a learned mask
vector and a per-position decoder ``Linear(D, V)`` over the backbone's (B, L, D) output (what stage 2 drops), so
every backbone, a user's own included, self-pretrains with no change. V is the input's alphabet: the vocabulary for
token tasks, the 256 pixel intensities for pixel tasks (input ``real`` too: the target is the raw pixel id the
embedding normalises). Retrieval pretrains on each document of a pair as its own row.

- ``masked`` (bidirectional backbones): each real position is masked independently with probability
  ``mask_rate``, drawn anew for every batch; a masked position's input embedding is replaced by the learned mask
  vector; the loss is the cross-entropy of the original token at the masked positions only. This is the authors'
  code (IdoAmos/not-from-scratch f919137, ``src/dataloaders/base.py:441-455``): a Bernoulli mask per position, no
  span masking and no BERT 80/10/10 split, the token replaced by ``<mask>`` (token tasks) or the pixel zeroed with a
  mask-indicator channel into the linear encoder (pixel tasks), loss on masked positions only. Both of their inputs
  put a learned vector at a masked position (the ``<mask>`` row; the indicator's encoder column plus the bias), which
  is what the mask vector is here, without a vocabulary row or input channel that stage 2 would not use.
- ``causal`` (causal backbones): the output at position t predicts the token at t + 1, every real position but the
  last (``base.py:428-435``); nothing is masked.
``auto`` takes ``causal`` for a causal backbone and ``masked`` otherwise. A backbone is causal when it says so
(``causal = True``) or, when it says nothing, when a probe shows that changing the second half of a sequence leaves
the first half's outputs unchanged up to float roundoff (``is_causal``). Next-token prediction on a bidirectional
backbone would read the answer at t + 1 and is refused.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from lra_bench.errors import ConfigError
from lra_bench.models.classifier import SequenceClassifier, stack_pair
from lra_bench.models.embedding import TokenEmbedding

log = logging.getLogger(__name__)

OBJECTIVES = ("auto", "masked", "causal")
PIXEL_LEVELS = 256  # pixel tasks predict the 8-bit intensity
CAUSAL_TOLERANCE = 1e-4  # is_causal: how far (relative) the first half may move when the second half changes


def is_causal(backbone: nn.Module, d_model: int, length: int = 64) -> bool:
    """Whether position t's output depends on positions <= t only: the backbone's ``causal`` attribute, else a
    probe in eval mode (two rows of ``length`` random embeddings; the second half changed; the first half's outputs
    compared). A backbone whose forward fails on the probe counts as bidirectional (what the protocol assumes)."""
    declared = getattr(backbone, "causal", None)
    if declared is not None:
        return bool(declared)
    was_training = backbone.training
    backbone.eval()
    try:
        generator = torch.Generator().manual_seed(0)
        param = next(backbone.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.randn(2, length, d_model, generator=generator).to(device)
        changed = x.clone()
        changed[:, length // 2 :] = torch.randn(2, length - length // 2, d_model, generator=generator).to(device)
        lengths = torch.full((2,), length, dtype=torch.long, device=device)
        with torch.no_grad():
            a, b = backbone(x, lengths), backbone(changed, lengths)
        first, moved = a[:, : length // 2].float(), b[:, : length // 2].float()
        # relative to the outputs' scale: a float32 FFT convolution (S4, S4D) moves the first half by ~1e-6 of it
        # (4e-6 for S4D at its image preset's size), a bidirectional backbone by a sizeable fraction
        return bool((first - moved).norm() <= CAUSAL_TOLERANCE * first.norm())
    except Exception:  # noqa: BLE001 - a backbone that cannot take the probe is treated as the protocol's default
        return False
    finally:
        backbone.train(was_training)


def resolve_objective(objective: str, backbone: nn.Module, d_model: int) -> str:
    """``masked`` or ``causal`` for this backbone; ``ConfigError`` for next-token prediction on a bidirectional one."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"pretrain.objective={objective!r}: must be one of {', '.join(OBJECTIVES)}")
    causal = is_causal(backbone, d_model)
    if objective == "auto":
        return "causal" if causal else "masked"
    if objective == "masked" and causal:
        log.warning("pretrain.objective=masked on %s, a causal backbone: a masked position sees its left context only "
                    "(the paper pretrains causal models with the causal objective: pretrain.objective=auto)",
                    type(backbone).__name__)
    if objective == "causal" and not causal:
        raise ConfigError(f"pretrain.objective=causal: {type(backbone).__name__} is bidirectional (its output at t sees "
                          "t + 1, the token to predict); use pretrain.objective=masked (or auto), or a causal backbone")
    return objective


class Denoiser(nn.Module):
    """Stage 1's network: the classifier's embedding and backbone, a mask vector and a per-position decoder.

    ``forward`` takes a batch's inputs (no labels) and returns (logits (N, V), targets (N,)) over the N positions
    the objective scores. The mask comes from torch's global generator,
    seeded by the run and restored on resume with the rest of the run's RNG state.
    """

    def __init__(self, classifier: SequenceClassifier, objective: str, mask_rate: float = 0.15):
        super().__init__()
        if objective not in ("masked", "causal"):
            raise ValueError(f"objective must be masked or causal (resolve_objective), got {objective!r}")
        self.classifier = classifier
        self.objective = objective
        self.mask_rate = mask_rate
        embedding = classifier.embedding
        self.vocab = embedding.num_embeddings if isinstance(embedding, TokenEmbedding) else PIXEL_LEVELS
        d = classifier.d_model
        self.mask_vector = nn.Parameter(torch.zeros(d)) if objective == "masked" else None
        if self.mask_vector is not None:
            nn.init.normal_(self.mask_vector, std=d**-0.5)
        self.decoder = nn.Linear(d, self.vocab)
        nn.init.xavier_uniform_(self.decoder.weight)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, tokens2: torch.Tensor | None = None,
                lengths2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens2 is not None:  # Retrieval: each document is a row of its own
            tokens, lengths = stack_pair(tokens, lengths, tokens2, lengths2)
        real = torch.arange(tokens.size(1), device=tokens.device) < lengths[:, None]
        offset = int(self.classifier.cls is not None)  # a CLS token sits before the sequence's positions
        if self.objective == "causal":
            out, _ = self.classifier.positions(tokens, lengths)
            out = out[:, offset:]
            scored = real[:, 1:]  # the output at t predicts t + 1, a real position
            return self.decoder(out[:, :-1][scored]), tokens[:, 1:][scored]
        chosen = (torch.rand(tokens.shape, device=tokens.device) < self.mask_rate) & real
        if not bool(chosen.any()):  # short rows and a low rate: score one position rather than an empty batch
            chosen[0, 0] = True
        out, _ = self.classifier.positions(tokens, lengths, replaced=chosen, replacement=self.mask_vector)
        out = out[:, offset:]
        return self.decoder(out[chosen]), tokens[chosen]

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """What stage 2 starts from: the classifier's weights without its classification head."""
        return {k: v for k, v in self.classifier.state_dict().items() if not k.startswith("head.")}
