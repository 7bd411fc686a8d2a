"""The options of the 19 built-in models (``conf/model/<name>.yaml``), each key with its valid range and meaning,
and the rules between keys. ``SCHEMAS[name]`` is checked at start-up (``lra_bench.models.options.check``) and
printed as the README's option tables (``python -m lra_bench.models.options.table``).

The constants come from the model modules themselves (``POOLINGS``, ``NORM_TYPES``...), so a choice added to a model
is a choice here. The ranges are what the constructors compute correctly with: a dropout of 1 divides by zero, 0
layers is no model, 0 hash rounds or a rank-0 projection attend to nothing.
"""

from __future__ import annotations

from lra_bench.models.attention.local import GROUPINGS
from lra_bench.models.attention.performer import FEATURES, KERNELS
from lra_bench.models.attention.reformer import SCORE_SCALES
from lra_bench.models.attention.sinkhorn import SORT_ACTIVATIONS
from lra_bench.models.attention.softmax import IMPLS
from lra_bench.models.attention.synthesizer import MODES
from lra_bench.models.classifier import HEAD_ACTIVATIONS, PAIR_FEATURES, POOLINGS
from lra_bench.models.embedding import EMBED_INITS
from lra_bench.models.mega.mega import ATTENTIONS as MEGA_ATTENTIONS
from lra_bench.models.mega.mega import REL_POS
from lra_bench.models.norms import NORM_TYPES
from lra_bench.models.options.rules import (BOOL, Choice, Either, Float, Instantiable, Int, ListOf, MappingOf, Nullable, Option,
                                            Relation, Schema, Values, at_least_length, at_most_length, divides, not_above, relation)
from lra_bench.models.ssm.s5 import ACTIVATIONS as S5_ACTIVATIONS
from lra_bench.models.ssm.s4_kernels import C_INITS as S4D_C_INITS
from lra_bench.models.ssm.s5 import C_INITS, OPT_CONFIGS

SIZE = Int(1)
DROPOUT = Float(0, 1, hi_open=True)  # p = 1 zeroes everything and divides by 1 - p = 0
POSITIVE = Float(0, lo_open=True)
MOMENTUM = Float(0, 1, hi_open=True)
LR = Nullable(POSITIVE, "the global lr, optimizer.lr")
SEED = Int(0, 2**32 - 1)

B = "net.backbone."
A = "net.backbone.attention."


LRA_CODE = "follows the top-level lra_code"


def classifier(*, lra_code: Option | None = None) -> tuple[Option, ...]:
    """``model.d_model`` and the classifier around every backbone (``SequenceClassifier``); ``lra_code`` its
    ``net.lra_code`` where the model has that key (the LRA Transformer block's models, and Luna's refusal)."""
    options = (
        Option("d_model", SIZE, "model width D"),
        Option("net.d_model", SIZE, "embedding and head width (= d_model)"),
        Option("net.num_classes", Int(2), "classes (from task.num_classes)"),
        Option("net.vocab_size", Nullable(Int(2), "filled in from the data"), "token vocabulary (from task.vocab_size)"),
        Option("net.input", Choice("tokens", "real"), "token ids or pixel values (from task.input)"),
        Option("net.padding_idx", Nullable(Int(0), "no frozen row"), "the token id whose embedding is frozen"),
        Option("net.pixel_mean", Float(), "pixel normalisation mean"),
        Option("net.pixel_std", POSITIVE, "pixel normalisation std"),
        Option("net.embed_init_std", Nullable(POSITIVE, "D^-1/2"), "token embedding init std"),
        Option("net.embed_init", Choice(*EMBED_INITS), "token embedding init: N(0, embed_init_std), or a one-hot Dense's "
               "(lecun-normal rows, zero bias: S5, LRU)"),
        Option("net.embed_fan_in", Nullable(Int(2), "the vocabulary"), "lecun_onehot's one-hot width (>= the vocabulary)"),
        Option("net.embed_dropout", DROPOUT, "dropout after the embedding"),
        Option("net.pooling", Choice(*POOLINGS), "how the sequence becomes one vector"),
        Option("net.head_hidden", Either(Int(0), ListOf(SIZE)), "head hidden sizes (0: one Linear)"),
        Option("net.head_activation", Choice(*HEAD_ACTIVATIONS), "head activation (gelu_tanh: flax's nn.gelu)"),
        Option("net.head_dropout", DROPOUT, "head dropout"),
        Option("net.head_out_bias", BOOL, "bias on the head's last Linear"),
        Option("net.pair", BOOL, "two documents per example (from task.pair)"),
        Option("net.pair_features", Choice(*PAIR_FEATURES), "pair features: [u, v] or [u, v, u*v, u-v]"),
    )
    return options + ((lra_code,) if lra_code is not None else ())


CLASSIFIER_LRA_CODE = Option("net.lra_code", BOOL, "LRA's input pipeline: pad to the task length, `inputs > 0` "
                             "mask, mean over the pads; " + LRA_CODE)


def _qkv_width(v: Values) -> int:
    return v[B + "d_qkv"] or v[B + "d_model"]


HEADS_DIVIDE_QKV = divides(B + "n_heads", _qkv_width, "the attention width (d_qkv, or d_model when null)", (B + "d_qkv", B + "d_model"))
FITS_LENGTH = at_least_length(B + "max_length", "the position table")


BLOCK_LRA_CODE = Option(B + "lra_code", BOOL, "LRA's block: tanh GELU, LayerNorm eps 1e-6, LRA's inits; " + LRA_CODE)
# LRA's block is pre-LN with GELU: the encoder refuses lra_code with another (TransformerEncoder)
BLOCK_LRA_CODE_NEEDS_PRENORM_GELU = relation(
    B + "lra_code", lambda v: not v[B + "lra_code"] or (v[B + "prenorm"] and v[B + "activation"] == "gelu"),
    "lra_code=true runs LRA's block, pre-LN with GELU: set model.net.backbone.prenorm=true and activation=gelu "
    "(or lra_code=false)", "needs prenorm true and activation gelu", (B + "prenorm", B + "activation"))


def transformer_backbone(attention: tuple[Option, ...], lra_code: bool = True) -> tuple[Option, ...]:
    """``TransformerEncoder``'s keys; ``attention`` the mechanism's (``net.backbone.attention.*``); ``lra_code``
    whether the encoder has the switch (Luna's own encoder has not)."""
    return (
        Option(B + "d_model", SIZE, "model width (= d_model)"),
        Option(B + "n_layers", SIZE, "layers"),
        Option(B + "n_heads", SIZE, "attention heads"),
        Option(B + "d_ff", SIZE, "MLP hidden width"),
        Option(B + "d_qkv", Nullable(SIZE, "d_model"), "q/k/v width"),
        Option(B + "dropout", DROPOUT, "residual and MLP dropout"),
        Option(B + "attn_dropout", DROPOUT, "attention-weight dropout"),
        Option(B + "prenorm", BOOL, "LayerNorm before (true) or after each sublayer"),
        Option(B + "activation", Choice("gelu", "relu"), "MLP activation"),
        Option(B + "positions", Choice("sinusoidal", "learned", "none"), "position table"),
        Option(B + "max_length", SIZE, "longest sequence (position table, length-sized mechanisms)"),
        *((BLOCK_LRA_CODE,) if lra_code else ()),
        *attention,
    )


def transformer_schema(name: str, attention: tuple[Option, ...], relations: tuple[Relation, ...] = (),
                       heads: Relation = HEADS_DIVIDE_QKV) -> Schema:
    return Schema(name, classifier(lra_code=CLASSIFIER_LRA_CODE) + transformer_backbone(attention),
                  (heads, FITS_LENGTH, BLOCK_LRA_CODE_NEEDS_PRENORM_GELU, *relations))


def mechanism_lra_code(what: str) -> Option:
    """A mechanism's ``lra_code`` key: LRA's released code of it (``what``), or the paper's mechanism."""
    return Option(A + "lra_code", BOOL, f"LRA's code ({what}); {LRA_CODE}")


def _reformer_setting(v: Values, key: str):
    """A Reformer key that null leaves to the setting: LRA's value with lra_code, else the paper's."""
    value = v[A + key]
    return (REFORMER_LRA if v[A + "lra_code"] else REFORMER_PAPER)[key] if value is None else value


def _reformer_width(v: Values) -> int:
    return (v[B + "d_qkv"] or v[B + "d_model"]) if _reformer_setting(v, "out_proj") else v[B + "d_model"]


REFORMER_LRA = dict(self_mask=False, key_norm=False, score_scale="lra", out_proj=False)  # reformer.py: LRA's code
REFORMER_PAPER = dict(self_mask=True, key_norm=True, score_scale="standard", out_proj=True)


def _lra_value(key: str, value, nullable: bool = True) -> Relation:
    """Under lra_code a key is LRA's value (or null: the setting's): the mechanism refuses any other."""
    shown = str(value).lower() if isinstance(value, bool) else value
    fix = "leave it null" if nullable else f"set it {shown}"
    return relation(key, lambda v: not v[A + "lra_code"] or v[key] in ((None, value) if nullable else (value,)),
                    f"lra_code=true runs LRA's code, where it is {shown}: {fix} (or set lra_code=false)",
                    f"{'null or ' if nullable else ''}{shown} with lra_code", (A + "lra_code",))


SYNTHESIZER_MODES = (*MODES, "dense+random", "random+dense", "dense+factorized_random", "factorized_random+dense")

TRANSFORMER = transformer_schema("transformer", (Option(
    B + "attention", Either(Choice(*IMPLS), Instantiable("a mechanism of your own, _partial_: true")),
    "softmax attention kernel, or a mechanism (lra_bench/models/attention/transformer.py)"),))

BIGBIRD = transformer_schema("bigbird", (
    Option(A + "block_size", SIZE, "block length b"),
    Option(A + "num_rand_blocks", Int(0), "random key blocks per query block"),
    Option(A + "random_span", Nullable(SIZE, "the whole layout"), "random blocks among the first that many tokens"),
    Option(A + "extra_pad_block", BOOL, "LRA's whole pad block when L is a multiple of b"),
    Option(A + "seed", Nullable(SEED, "a seed per layer from torch's generator; layer l seeded l with lra_code"),
           "random-table seed"),
    mechanism_lra_code("appended pad block attended, layer l seeded l"),
), (at_most_length(A + "block_size", "a block"),
    relation(A + "extra_pad_block", lambda v: v[A + "extra_pad_block"] or not v[A + "lra_code"],
             "lra_code=true pads as LRA does, a whole block when L is a multiple of block_size: set it true",
             "true with lra_code", (A + "lra_code",))))

LINEAR_TRANSFORMER = transformer_schema("linear_transformer", (
    Option(A + "eps", POSITIVE, "added to the denominator"),
    mechanism_lra_code("the padding mask never applied"),
))

LINFORMER = transformer_schema("linformer", (
    Option(A + "k", SIZE, "projected length (low-rank features)"),
    Option(A + "share_kv", BOOL, "one projection for keys and values"),
    mechanism_lra_code("the padding mask never applied"),
))

LOCAL = transformer_schema("local", (
    Option(A + "block_size", SIZE, "group length"),
    Option(A + "grouping", Nullable(Choice(*GROUPINGS), "contiguous; strided with lra_code"),
           "contiguous chunks or LRA's strided groups"),
    mechanism_lra_code("strided groups, the mask cut in contiguous chunks"),
), (at_most_length(A + "block_size", "a group"),
    relation(A + "grouping", lambda v: not v[A + "lra_code"] or v[A + "grouping"] in (None, "strided"),
             "lra_code=true runs LRA's strided groups: leave it null (or set lra_code=false)",
             "null or strided with lra_code", (A + "lra_code",))))

LONGFORMER = transformer_schema("longformer", (
    Option(A + "window_size", SIZE, "sliding-window keys per query"),
    Option(A + "n_global", Int(0), "leading global positions"),
    mechanism_lra_code("no global tokens (LRA's encoder passes no global_mask)"),
), (at_most_length(A + "n_global", "the global positions"),
    relation(A + "n_global", lambda v: not v[A + "lra_code"] or v[A + "n_global"] == 0,
             "lra_code=true runs LRA's Longformer, whose encoder passes no global_mask: set it 0 (or lra_code=false)",
             "0 with lra_code", (A + "lra_code",))))

PERFORMER = transformer_schema("performer", (
    Option(A + "kernel", Choice(*KERNELS), "relu (generalized) or softmax (FAVOR+)"),
    Option(A + "features", Choice(*FEATURES), "random-feature projection"),
    Option(A + "n_features", SIZE, "random features M"),
    Option(A + "redraw", BOOL, "a new projection at every training call"),
    Option(A + "feature_eps", Float(0), "added to every feature"),
    Option(A + "stabilizer", Float(0), "denominator guard"),
    mechanism_lra_code("the padding mask never applied, features redrawn at every call"),
), (relation(A + "kernel", lambda v: v[A + "kernel"] != "softmax" or v[A + "features"] != "deterministic",
             "needs random features: set model.net.backbone.attention.features to ortho or iid",
             "softmax needs features ortho or iid", (A + "features",)),))

REFORMER = transformer_schema("reformer", (
    Option(A + "n_hashes", SIZE, "hash rounds"),
    Option(A + "n_buckets", Int(2, step=2), "hash buckets"),
    Option(A + "chunk_length", Nullable(SIZE, "max_length // n_buckets + 1"), "keys per chunk"),
    Option(A + "self_mask", Nullable(BOOL, "true; false with lra_code"), "a query never attends to itself"),
    Option(A + "key_norm", Nullable(BOOL, "true; false with lra_code"), "unit-length keys"),
    Option(A + "score_scale", Nullable(Choice(*SCORE_SCALES), "standard; lra with lra_code"),
           "q.k * sqrt(E) (lra) or / sqrt(E)"),
    Option(A + "out_proj", Nullable(BOOL, "true; false with lra_code"), "an output projection (width d_qkv)"),
    Option(A + "hash_seed", SEED, "the fixed rotation's seed"),
    mechanism_lra_code("no self mask, raw keys, q.k * sqrt(E), no output projection"),
), tuple(_lra_value(A + key, value) for key, value in REFORMER_LRA.items()), heads=divides(B + "n_heads", _reformer_width, "the attention width (d_model; d_qkv with out_proj)",
                 (B + "d_qkv", B + "d_model", A + "out_proj")))

SINKHORN = transformer_schema("sinkhorn", (
    Option(A + "block_size", SIZE, "block length"),
    Option(A + "max_num_blocks", SIZE, "the sort net's width (routing targets)"),
    Option(A + "sort_activation", Choice(*SORT_ACTIVATIONS), "softmax (LRA) or Sinkhorn balancing"),
    Option(A + "sinkhorn_iters", Int(0), "Sinkhorn iterations"),
    Option(A + "temperature", POSITIVE, "sort temperature"),
    Option(A + "local", BOOL, "each block also attends to itself"),
    mechanism_lra_code("strided blocks, inert sort net"),
), (at_most_length(A + "block_size", "a block"), _lra_value(A + "local", True, nullable=False)))

SPARSE_TRANSFORMER = transformer_schema("sparse_transformer", (
    Option(A + "block_size", SIZE, "block length"),
    Option(A + "c", Int(0), "summary positions per block"),
    Option(A + "causal", BOOL, "causal pattern (LRA)"),
    Option(A + "cls_token", BOOL, "position 0 attends and is attended by all"),
), (at_most_length(A + "block_size", "a block"), not_above(A + "c", A + "block_size")))

SYNTHESIZER = transformer_schema("synthesizer", (
    Option(A + "mode", Choice(*SYNTHESIZER_MODES), "synthetic logits"),
    Option(A + "ignore_dot_product", BOOL, "synthetic logits only (no Q K^T)"),
    Option(A + "k", SIZE, "rank of factorized_random"),
    mechanism_lra_code("dense logits reshaped unpermuted, no mask without the dot product"),
))

LUNA = Schema("luna", classifier(lra_code=Option("net.lra_code", Choice(False), "Luna is not in LRA's code: "
                                                "the top-level lra_code=true is refused")) + transformer_backbone((), lra_code=False) + (
    Option(B + "proj_length", SIZE, "memory length l"),
    Option(B + "act_dropout", DROPOUT, "dropout after the FFN activation"),
    Option(B + "embed_norm", BOOL, "LayerNorm on the embedded X and P"),
    Option(B + "tie_layers", BOOL, "one layer run n_layers times"),
    Option(B + "bert_init", BOOL, "N(0, 0.02) init"),
), (
    divides(B + "n_heads", lambda v: v[B + "d_model"], "d_model", (B + "d_model",)),
    relation(B + "d_qkv", lambda v: v[B + "d_qkv"] in (None, v[B + "d_model"]),
             lambda v: f"must be null or d_model = {v[B + 'd_model']} (Luna's projections are d_model wide)",
             "null or d_model", (B + "d_model",)),
    relation(B + "embed_norm", lambda v: not (v[B + "embed_norm"] and v[B + "prenorm"]),
             "goes with post-LN layers: set model.net.backbone.prenorm=false or embed_norm=false",
             "false with prenorm", (B + "prenorm",)),
    FITS_LENGTH,
))


def _mega_full_attention(v: Values) -> bool:
    chunk = v[B + "chunk_size"]
    return chunk <= 0 or v.length is None or chunk >= v.length


def mega_schema(name: str, chunk: Option) -> Schema:
    fits = at_least_length(B + "max_positions", "the relative-position table (full attention)")
    return Schema(name, classifier() + (
        Option("dropout", DROPOUT, "dropout of the backbone and head"),
        Option("head_hidden", Int(0), "head hidden size (a preset's; net.head_hidden reads it)"),
        Option(B + "d_model", SIZE, "model width (= d_model)"),
        Option(B + "n_layers", SIZE, "layers"),
        Option(B + "d_hidden", SIZE, "value width H"),
        Option(B + "d_ffn", SIZE, "NFFN hidden width"),
        Option(B + "d_qk", SIZE, "shared query/key width Z"),
        Option(B + "n_dim", SIZE, "EMA dimensions N"),
        chunk,
        Option(B + "truncation", Nullable(SIZE, "the whole length"), "EMA kernel taps per direction"),
        Option(B + "attention", Choice(*MEGA_ATTENTIONS), "attention function"),
        Option(B + "rel_pos", Choice(*REL_POS), "relative position bias"),
        Option(B + "max_positions", SIZE, "longest sequence with full attention"),
        Option(B + "norm", Choice(*NORM_TYPES), "normalisation"),
        Option(B + "prenorm", BOOL, "pre-norm (false: post-norm, the LRA archs)"),
        Option(B + "dropout", DROPOUT, "dropout"),
        Option(B + "attn_dropout", DROPOUT, "attention-weight dropout"),
        Option(B + "hidden_dropout", DROPOUT, "hidden dropout"),
        Option(B + "bidirectional", BOOL, "EMA in both directions"),
    ), (
        relation(B + "max_positions", lambda v: not _mega_full_attention(v) or fits.holds(v), fits.rule,
                 ">= the task's length with full attention", (B + "chunk_size",)),
        relation(B + "d_qk", lambda v: v[B + "rel_pos"] != "rotary" or v[B + "d_qk"] % 2 == 0,
                 "must be even with rel_pos=rotary", "even with rotary", (B + "rel_pos",)),
    ))


MEGA = mega_schema("mega", Option(B + "chunk_size", Int(), "chunk length C (<= 0: full attention)"))
MEGA_CHUNK = mega_schema("mega_chunk", Option(B + "chunk_size", SIZE, "chunk length C (model=mega for full attention)"))

DT_RANGE = (not_above(B + "dt_min", B + "dt_max"),)


def ssm_schema(name: str, options: tuple[Option, ...], relations: tuple[Relation, ...] = ()) -> Schema:
    """A state space / recurrent model: the classifier, width and depth, then its own keys."""
    return Schema(name, classifier() + (
        Option(B + "d_model", SIZE, "model width (= d_model)"),
        Option(B + "n_layers", SIZE, "layers"),
        *options,
    ), relations)


def s4_schema(name: str) -> Schema:
    return ssm_schema(name, (
        Option(B + "d_state", Int(2, step=2), "state size N"),
        Option(B + "mode", Choice("dplr", "diag"), "S4 (dplr) or S4D (diag) kernel"),
        Option(B + "bidirectional", BOOL, "a second kernel backwards"),
        Option(B + "init", Choice("legs", "lin", "inv"), "A init (dplr: legs only)"),
        Option(B + "disc", Choice("zoh", "bilinear"), "discretisation (S4D)"),
        Option(B + "n_ssm", Nullable(SIZE, "one SSM per channel"), "channels sharing A, B, P"),
        Option(B + "dt_min", POSITIVE, "smallest initial step"),
        Option(B + "dt_max", POSITIVE, "largest initial step"),
        Option(B + "dt_transform", Choice("softplus", "exp"), "step parameterisation"),
        Option(B + "lr", Nullable(Either(POSITIVE, MappingOf(("dt", "A", "B", "C"), Nullable(POSITIVE, "the global lr"))),
                                  "the global lr"), "SSM parameters' lr"),
        Option(B + "dropout", DROPOUT, "dropout"),
        Option(B + "norm", Choice("batch", "layer"), "normalisation"),
        Option(B + "prenorm", BOOL, "pre-norm"),
        Option(B + "chunk", SIZE, "frequencies per Cauchy chunk (memory only)"),
        Option(B + "decay_norm_bias", BOOL, "biases and norm weights decayed (d589d98) or at weight decay 0 (HEAD)"),
        Option(B + "b_clip", Nullable(POSITIVE, "unclipped, as d589d98"), "S4D-LegS: clip of Im B (HEAD 2.0)"),
        Option(B + "c_init", Choice(*S4D_C_INITS), "S4D: C ~ CN(0, 1) (HEAD) or CN(0, 1) * B (d589d98)"),
    ), DT_RANGE + (
        relation(B + "b_clip", lambda v: v[B + "mode"] == "diag" or v[B + "b_clip"] == 2.0,
                 "must be 2.0 with mode=dplr (S4): other values are S4D options (mode=diag)", "2.0 with dplr",
                 (B + "mode",)),
        relation(B + "c_init", lambda v: v[B + "mode"] == "diag" or v[B + "c_init"] == "normal",
                 "must be normal with mode=dplr (S4): normal_times_b is an S4D option (mode=diag)", "normal with dplr",
                 (B + "mode",)),
        relation(B + "init", lambda v: v[B + "mode"] != "dplr" or v[B + "init"] == "legs",
                 "must be legs with mode=dplr (S4); lin and inv are S4D inits (mode=diag)", "legs with dplr",
                 (B + "mode",)),
        relation(B + "n_ssm", lambda v: v[B + "n_ssm"] is None or v[B + "d_model"] % v[B + "n_ssm"] == 0,
                 lambda v: f"must divide d_model = {v[B + 'd_model']}", "divides d_model", (B + "d_model",)),
    ))


S4 = s4_schema("s4")
S4D = s4_schema("s4d")

S5 = ssm_schema("s5", (
    Option(B + "d_state", SIZE, "state size P"),
    Option(B + "blocks", SIZE, "HiPPO-N blocks J"),
    Option(B + "conj_sym", BOOL, "conjugate symmetry (P/2 stored)"),
    Option(B + "bidirectional", BOOL, "a second scan backwards"),
    Option(B + "C_init", Choice(*C_INITS), "C init"),
    Option(B + "discretization", Choice("zoh", "bilinear"), "discretisation"),
    Option(B + "dt_min", POSITIVE, "smallest initial step"),
    Option(B + "dt_max", POSITIVE, "largest initial step"),
    Option(B + "clip_eigs", BOOL, "Re(Lambda) <= -1e-4"),
    Option(B + "activation", Choice(*S5_ACTIVATIONS), "layer activation"),
    Option(B + "dropout", DROPOUT, "dropout"),
    Option(B + "prenorm", BOOL, "pre-norm"),
    Option(B + "norm", Choice("batch", "layer"), "normalisation"),
    Option(B + "bn_momentum", MOMENTUM, "BatchNorm momentum (flax convention)"),
    Option(B + "lr", LR, "lr of the SSM (before lr_factor)"),
    Option(B + "lr_factor", POSITIVE, "SSM lr = lr / lr_factor"),
    Option(B + "opt_config", Choice(*OPT_CONFIGS), "which SSM parameters get weight decay"),
    Option(B + "dt_global", BOOL, "log_step at the global lr with weight decay"),
    Option(B + "chunk", SIZE, "scan chunk length (speed only)"),
), DT_RANGE + (
    relation(B + "d_state", lambda v: v[B + "d_state"] % v[B + "blocks"] == 0
             and (v[B + "d_state"] // v[B + "blocks"]) % (2 if v[B + "conj_sym"] else 1) == 0,
             lambda v: f"must split into blocks = {v[B + 'blocks']} blocks of "
                       f"{'even ' if v[B + 'conj_sym'] else ''}size", "blocks x (even) block size",
             (B + "blocks", B + "conj_sym")),
))

LRU = ssm_schema("lru", (
    Option(B + "d_state", SIZE, "state size N"),
    Option(B + "r_min", Float(0, 1), "smallest |lambda| at init"),
    Option(B + "r_max", Float(0, 1), "largest |lambda| at init"),
    Option(B + "max_phase", POSITIVE, "largest arg(lambda) at init"),
    Option(B + "bidirectional", BOOL, "a second scan backwards"),
    Option(B + "dropout", DROPOUT, "dropout"),
    Option(B + "prenorm", BOOL, "pre-norm"),
    Option(B + "norm", Choice("batch", "layer"), "normalisation"),
    Option(B + "bn_momentum", MOMENTUM, "BatchNorm momentum (flax convention)"),
    Option(B + "lr", LR, "the global lr"),
    Option(B + "recurrent_lr_scale", POSITIVE, "lr scale of nu, theta, gamma"),
    Option(B + "chunk", SIZE, "scan chunk length (speed only)"),
), (not_above(B + "r_min", B + "r_max"),))

MAMBA = ssm_schema("mamba", (
    Option(B + "d_state", SIZE, "state size N"),
    Option(B + "d_conv", SIZE, "causal conv width"),
    Option(B + "expand", SIZE, "inner width E = expand x D"),
    Option(B + "dt_rank", Nullable(SIZE, "ceil(D / 16)"), "rank of the step projection"),
    Option(B + "dt_min", POSITIVE, "smallest initial step"),
    Option(B + "dt_max", POSITIVE, "largest initial step"),
    Option(B + "dt_init_floor", POSITIVE, "floor of the initial step"),
    Option(B + "dt_scale", POSITIVE, "initial step scale"),
    Option(B + "conv_bias", BOOL, "bias on the conv"),
    Option(B + "bias", BOOL, "bias on in_proj / out_proj"),
    Option(B + "bidirectional", BOOL, "a second scan backwards (BiMamba)"),
    Option(B + "norm", Choice("rms", "layer"), "normalisation"),
    Option(B + "norm_eps", POSITIVE, "norm epsilon"),
    Option(B + "dropout", DROPOUT, "dropout on each mixer output"),
    Option(B + "chunk", SIZE, "scan chunk length (speed only)"),
), DT_RANGE)

SCHEMAS: dict[str, Schema] = {s.model: s for s in (
    MEGA, MEGA_CHUNK, TRANSFORMER, BIGBIRD, LINEAR_TRANSFORMER, LINFORMER, LOCAL, LONGFORMER, PERFORMER, REFORMER,
    SINKHORN, SPARSE_TRANSFORMER, SYNTHESIZER, LUNA, S4, S4D, S5, LRU, MAMBA)}
