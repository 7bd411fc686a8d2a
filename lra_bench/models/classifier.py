"""The LRA classifier: embed -> backbone -> pool -> MLP head, and the two-tower form for Retrieval.

Every backbone has the same signature, ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)``, so
Mega, S4, the Transformer and a user's own model drop in unchanged (the contract and its optional hooks:
``lra_bench/models/protocol.py``). Pooling uses true lengths (pads never count), unless ``lra_code`` reproduces
LRA's released input pipeline (below). A backbone's ``supported_inputs`` and ``max_length`` hooks are checked here:
a mismatch is refused with one line.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.embedding import RealNumberEmbedding, TokenEmbedding
from lra_bench.models.masks import masked_mean
from lra_bench.models.protocol import max_length, protocol_problem, supported_inputs

POOLINGS = ("mean", "cls", "first", "sum", "last")
PAIR_FEATURES = ("concat", "nli")
HEAD_ACTIVATIONS = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),  # flax nn.gelu (S5)
                    "relu": nn.ReLU, "tanh": nn.Tanh}


def stack_pair(tokens: torch.Tensor, lengths: torch.Tensor, tokens2: torch.Tensor, lengths2: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both documents of B pairs as one batch of 2B rows, right-padded to the longer of the two: one backbone
    pass instead of two (faster; padding never counts, so each row's output is what it would be alone)."""
    width = max(tokens.size(1), tokens2.size(1))
    pad = lambda t: F.pad(t, (0, width - t.size(1)))  # noqa: E731
    return torch.cat([pad(tokens), pad(tokens2)]), torch.cat([lengths, lengths2])


def lecun_normal_(weight: torch.Tensor) -> torch.Tensor:
    """JAX's ``lecun_normal`` (``variance_scaling(1, "fan_in", "truncated_normal")``) on a (out, in) weight: N(0, 1)
    truncated to [-2, 2], times sqrt(1 / in) / 0.8796 (the truncated normal's standard deviation)."""
    std = (1.0 / weight.size(1)) ** 0.5 / 0.87962566103423978
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class ClassifierHead(nn.Module):
    """[Linear(d, hidden) -> dropout -> activation] per hidden size, then Linear(last, classes).

    Mega's head is one hidden layer (2D) with GELU and no output bias; LRA's Transformer uses ReLU with
    biases (two hidden layers on Retrieval); S4 decodes with a single Linear (``hidden=0``).
    Weights xavier-uniform, or with ``lra_code`` flax's ``nn.Dense`` default that LRA's ``classifier_head`` keeps
    (``common_layers.py:191-193``): lecun-normal, a normal truncated at 2 standard deviations and rescaled to
    variance 1 / fan_in. Biases zero.
    """

    def __init__(self, d_in: int, num_classes: int, hidden: int | Sequence[int], activation: str, dropout: float,
                 out_bias: bool, lra_code: bool = False):
        super().__init__()
        acts = HEAD_ACTIVATIONS
        if activation not in acts:
            raise ValueError(f"head activation must be one of {sorted(acts)}, got {activation!r}")
        sizes = [h for h in ([hidden] if isinstance(hidden, int) else list(hidden)) if h]
        layers: list[nn.Module] = []
        width = d_in
        for h in sizes:
            layers += [nn.Linear(width, h), nn.Dropout(dropout), acts[activation]()]
            width = h
        if not sizes:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes, bias=out_bias))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                if lra_code:
                    lecun_normal_(m.weight)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SequenceClassifier(nn.Module):
    """Classifies one sequence, or a pair through a shared encoder (``pair=True``, Retrieval).

    input: ``tokens`` (ids -> ``TokenEmbedding``) or ``real`` (pixel values -> ``RealNumberEmbedding``).
    padding_idx: the id whose embedding row is frozen (0 for text; None for pixel tokens, where 0 is black).
    embed_init: ``normal`` (N(0, embed_init_std)) or ``lecun_onehot`` (S5's and LRU's one-hot Dense: lecun-normal
    rows, sd ``embed_fan_in``^-1/2, the vocabulary when null, and a zero-initialised bias; ``TokenEmbedding``).
    pooling: ``mean`` over real positions, ``cls`` (a learned token prepended, read at position 0), ``first``
    (position 0 itself, no token added: LRA's dual encoder, whose "CLS" pooling reads the first byte), ``sum`` or
    ``last`` (each row's last real position, ``lengths - 1``: S4's ``mode: last`` decoder, on Pathfinder at d589d98).
    pair_features: ``concat`` = [u, v] (LRA, Mega) or ``nli`` = [u, v, u*v, u-v] (S4). Both documents of a pair
    run through the backbone as one batch of 2B rows (as S4 does: BatchNorm statistics span both).
    lra_code: LRA's released code (``lra_benchmarks/models/<model>/<model>.py`` and ``layers/common_layers.py``
    ``classifier_head`` at cd31e5c6) instead of the default, where pads never count. LRA pads every sequence with id 0
    to the task's length (here: the backbone's ``max_length``, less one for the CLS token), runs every position as
    data, hides ``inputs > 0`` from attention only (``src_padding_mask = (inputs > 0)``: on pixel tasks every black
    pixel too; the CLS token takes the first input's mask), trains the embedding of id 0 like any other, and its
    ``MEAN`` pooling is ``jnp.mean(encoded, axis=1)``: the pads' outputs counted; the head's Dense layers keep flax's
    default init (``ClassifierHead``). Only for backbones whose
    ``forward`` takes ``token_mask`` (the LRA Transformer block); each mechanism's own ``lra_code`` does with that
    mask what LRA's attention does.
    """

    def __init__(
        self,
        backbone: nn.Module,
        d_model: int,
        num_classes: int,
        vocab_size: int = 0,
        input: str = "tokens",
        padding_idx: int | None = 0,
        embed_init_std: float | None = None,
        embed_init: str = "normal",
        embed_fan_in: int | None = None,
        embed_dropout: float = 0.0,
        pixel_mean: float = 0.0,
        pixel_std: float = 1.0,
        pooling: str = "mean",
        head_hidden: int | Sequence[int] = 0,
        head_activation: str = "gelu",
        head_dropout: float = 0.0,
        head_out_bias: bool = True,
        pair: bool = False,
        pair_features: str = "concat",
        lra_code: bool = False,
    ):
        super().__init__()
        problem = protocol_problem(backbone)
        if problem is not None:
            raise TypeError(f"{problem} (the backbone protocol: lra_bench/models/protocol.py)")
        if input in ("tokens", "real") and input not in supported_inputs(backbone):
            raise ValueError(f"{type(backbone).__name__} takes {' or '.join(supported_inputs(backbone))} input "
                             f"(its supported_inputs), not this task's {input!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pair_features not in PAIR_FEATURES:
            raise ValueError(f"pair_features must be one of {PAIR_FEATURES}, got {pair_features!r}")
        if input == "tokens":
            if vocab_size is None:
                raise ValueError("vocab_size is None: a tokenizer that builds its vocabulary from the data fills it in "
                                 "(lra_bench.train does); pass task.vocab_size=<n> when building the model by hand")
            if vocab_size < 2:
                raise ValueError(f"token input needs vocab_size >= 2, got {vocab_size}")
            pad_row = None if lra_code else padding_idx  # LRA's nn.Embed trains the row of id 0 like any other
            self.embedding: nn.Module = TokenEmbedding(vocab_size, d_model, embed_init_std, pad_row, embed_init,
                                                       embed_fan_in)
        elif input == "real":
            self.embedding = RealNumberEmbedding(d_model, mean=pixel_mean, std=pixel_std)
        else:
            raise ValueError(f"input must be tokens or real, got {input!r}")
        self.embed_dropout = nn.Dropout(embed_dropout)
        if lra_code and "token_mask" not in inspect.signature(backbone.forward).parameters:
            raise ValueError(f"lra_code=true reproduces LRA's released code, whose models are the LRA Transformer block "
                             f"with an attention mechanism; {type(backbone).__name__} is not one of them: set lra_code=false")
        if getattr(backbone, "lra_code", lra_code) != lra_code:
            raise ValueError(f"lra_code={lra_code} for the classifier but {type(backbone).__name__}.lra_code="
                             f"{not lra_code}: build both from the one top-level lra_code")
        if lra_code and max_length(backbone) is None:
            raise ValueError(f"lra_code=true pads every sequence to the backbone's max_length (LRA's fixed task length); "
                             f"{type(backbone).__name__} declares none")
        self.lra_code = lra_code
        self.d_model = d_model
        self.backbone = backbone
        self.pooling = pooling
        self.cls = nn.Parameter(torch.zeros(d_model)) if pooling == "cls" else None
        self.pair = pair
        self.pair_features = pair_features
        d_in = d_model * ((4 if pair_features == "nli" else 2) if pair else 1)
        self.head = ClassifierHead(d_in, num_classes, head_hidden, head_activation, head_dropout, head_out_bias,
                                   lra_code)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens: (B, L), lengths: (B,) -> pooled (B, D)."""
        x, lengths = self.positions(tokens, lengths)
        if self.pooling in ("cls", "first"):
            return x[:, 0]
        if self.pooling == "sum":
            return x.sum(1)  # backbones return zeros at pads
        if self.pooling == "last":
            return x[torch.arange(x.size(0), device=x.device), lengths - 1]
        return masked_mean(x, lengths)  # with lra_code lengths are the padded width: LRA's mean over every position

    def positions(self, tokens: torch.Tensor, lengths: torch.Tensor, replaced: torch.Tensor | None = None,
                  replacement: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's per-position output (B, L', D) before pooling, and its lengths (L' = L + 1 with a CLS
        token, at position 0). ``replaced`` (B, L) bool: positions whose input embedding is ``replacement`` (D,)
        instead of the token's (self-pretraining's masked positions, ``lra_bench/pretraining/objectives.py``)."""
        token_mask = None
        if self.lra_code:  # LRA: every row padded with 0 to the task's length, all of it data, `inputs > 0` masked
            width = max_length(self.backbone) - (self.cls is not None)
            if tokens.size(1) > width:
                raise ValueError(f"sequence length {tokens.size(1)} exceeds the length LRA pads to ({width}: the "
                                 f"backbone's max_length{' less the CLS token' if self.cls is not None else ''})")
            tokens = F.pad(tokens, (0, width - tokens.size(1)))
            lengths = torch.full_like(lengths, width)
            token_mask = tokens > 0
        x = self.embedding(tokens)
        if replaced is not None:
            x = torch.where(replaced[..., None], replacement.to(x.dtype), x)
        x = self.embed_dropout(x)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.size(0), 1, -1).to(x.dtype), x], dim=1)
            lengths = lengths + 1
            if token_mask is not None:
                token_mask = torch.cat([token_mask[:, :1], token_mask], dim=1)  # LRA: CLS inherits the first mask
        limit = max_length(self.backbone)
        if limit is not None and x.size(1) > limit:
            raise ValueError(f"sequence length {x.size(1)}{' (with the CLS token)' if self.cls is not None else ''} exceeds "
                             f"{type(self.backbone).__name__}'s max_length ({limit}): lower task.max_length or raise the model's")
        x = self.backbone(x, lengths) if token_mask is None else self.backbone(x, lengths, token_mask=token_mask)
        return x, lengths

    def forward(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        tokens2: torch.Tensor | None = None,
        lengths2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, num_classes). Pair mode needs tokens2/lengths2."""
        if not self.pair:
            return self.head(self.encode(tokens, lengths))
        if tokens2 is None or lengths2 is None:
            raise ValueError("a pair classifier needs tokens2 and lengths2 (a PairBatch)")
        u, v = self.encode(*stack_pair(tokens, lengths, tokens2, lengths2)).chunk(2)
        feats = [u, v, u * v, u - v] if self.pair_features == "nli" else [u, v]
        return self.head(torch.cat(feats, dim=-1))

    def embedding_parameter_names(self) -> list[str]:
        """Names of the token/position tables, left out of the non-embedding parameter count."""
        names = [n for n, _ in self.named_parameters() if n.startswith("embedding.") and isinstance(self.embedding, TokenEmbedding)]
        names += [n for n, _ in self.named_parameters() if n.endswith("positions.table")]
        return names
