"""Mega and Mega-chunk (Ma et al., "Mega: Moving Average Equipped Gated Attention", ICLR 2023).

The math is the official implementation's (facebookresearch/mega, fairseq fork:
fairseq/modules/moving_average_gated_attention.py,
mega_sentence_encoder_layer.py, exponential_moving_average.py, normalized_feedforward_network.py),
including what the paper leaves out: the EMA's omega residual and SiLU, q = 1 - p*a, separate
forward/backward EMA kernels both counting lag 0, 1024-tap truncation, V from the normed input,
the fused [u | z, r | hx] projection with a SiLU reset gate, softmax scaled by Z^-1/2 but laplace /
relu^2 by 1/(valid keys per chunk), a rel-pos bias sized to the chunk, no absolute positions, and
N(0, 0.02) init of every Linear.

Mega-chunk pads any input (tokens or pixels) to a chunk multiple inside the backbone and removes
the padding after, so every length works (the official code asserts for pixels; facebookresearch/mega#16).

Shapes: B batch, L length, D embed dim, H value dim (paper v), Z shared q/k dim, F NFFN hidden dim,
N EMA dims, C chunk size (nC chunks). Tensors are batch-first (B, L, D); fairseq is (L, B, D).

Parameter names (``backbone.`` prefix in our classifier) and their official / Hugging Face names:

| ours (``layers.i.``)              | official fairseq (``encoder.layers.i.``) | HF port (``mega.layers.i.``)                  |
|-----------------------------------|------------------------------------------|-----------------------------------------------|
| mega_layer.move.delta             | mega_layer.move.delta                    | mega_layer.ema_gate.damping_factor            |
| mega_layer.move.alpha             | mega_layer.move.alpha                    | mega_layer.ema_gate.decay_factor              |
| mega_layer.move.beta              | mega_layer.move.beta                     | mega_layer.ema_gate.ema_expansion_matrix      |
| mega_layer.move.gamma             | mega_layer.move.gamma                    | mega_layer.ema_gate.kernel_projection_matrix  |
| mega_layer.move.omega             | mega_layer.move.omega                    | mega_layer.ema_gate.residual_weight           |
| mega_layer.{v,mx,h}_proj.*        | mega_layer.{v,mx,h}_proj.*               | mega_layer.{v,mx,h}_proj.*                    |
| mega_layer.gamma / .beta (2, Z)   | mega_layer.gamma / .beta                 | mega_layer.qk_weight / .qk_bias               |
| mega_layer.rel_pos_bias.rel_pos_bias | same (simple)                         | same (HF sizes it 2*max_positions-1 even when chunking) |
| mega_layer.rel_pos_bias.alpha / .beta | same (rotary)                        | mega_layer.rel_pos_bias.alpha / .b_param      |
| mega_layer.norm.norm.*            | mega_layer.norm.norm.*                   | mega_layer.norm.norm.*                        |
| nffn.fc1.*, nffn.fc2.*, nffn.norm.norm.* | same                              | same                                          |
| final_norm.norm.*                 | encoder.final_norm.norm.*                | (none: the port has no final norm)            |

Classifier-level names (``lra_bench.models.classifier``): ``embedding.weight`` = official
``encoder.embed_tokens.embed.weight``; ``embedding.{weight,bias}`` (pixels) = ``embed_tokens.{weight,bias}``
of ``RealNumberEmbedding``; ``head.net.0`` = ``classifier.0.0`` and ``head.net.3`` = ``sentence_projection_layer``.
``mega_block_from_hf`` copies one HF ``MegaBlock`` into a ``MegaEncoderLayer``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.mega.biased_softmax import hankel_biased_softmax
from lra_bench.models.dropout import Dropout
from lra_bench.models.mega.ema import MultiHeadEMA
from lra_bench.models.masks import as_key_mask, length_mask
from lra_bench.models.norms import SequenceNorm

ATTENTIONS = ("softmax", "laplace", "relu2")
REL_POS = ("simple", "rotary")
LAPLACE_MU = math.sqrt(0.5)  # 0.707107: laplace matches relu^2 in value and slope at sqrt(2) (paper App. C)
LAPLACE_SIGMA = math.sqrt(1.0 / (4.0 * math.pi))  # 0.282095; not sqrt(pi/4) (lucidrains/FLASH-pytorch#7)


def laplace(x: torch.Tensor) -> torch.Tensor:
    """0.5 * (1 + erf((x - mu) / (sigma * sqrt(2))))."""
    return 0.5 * (1.0 + torch.erf((x - LAPLACE_MU) / (LAPLACE_SIGMA * math.sqrt(2.0))))


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def softmax_key_padding(mask: torch.Tensor) -> torch.Tensor:
    """Keys to mask out of a softmax, from (..., C) True = real key: pads, except in chunks of pads only,
    which stay unmasked so their rows are finite (their outputs are pad positions, zeroed later)."""
    pad = ~mask
    return pad & ~pad.all(dim=-1, keepdim=True)


class _ToeplitzFromDiagonals(torch.autograd.Function):
    """T[i, j] = b[S - 1 - i + j] for b of length 2S - 1, with a backward of diagonal sums.

    Autograd through ``unfold`` + ``flip`` works but its backward (``unfold_backward``) is the slowest
    step of full attention on CPU; the sums along T's diagonals are two contiguous passes instead.
    """

    @staticmethod
    def forward(ctx, b: torch.Tensor, size: int) -> torch.Tensor:
        ctx.size = size
        return b.unfold(0, size, 1).flip(0)  # row i = b[S-1-i : 2S-1-i]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        S = ctx.size
        # Anti-diagonal sums of G' = grad with columns reversed (i + c = m  <=>  j - i = S - 1 - m):
        # padding each row to 2S and re-viewing rows with stride 2S - 1 shifts row i right by i.
        shifted = F.pad(grad.flip(1), (0, S)).reshape(-1)[: S * (2 * S - 1)].view(S, 2 * S - 1)
        return shifted.sum(0).flip(0), None


class SimpleRelativePositionalBias(nn.Module):
    """One learned scalar per offset: bias[i, j] = w[M - 1 + (j - i)], w of length 2M - 1, N(0, 0.02)."""

    def __init__(self, max_positions: int):
        super().__init__()
        self.max_positions = max_positions
        self.rel_pos_bias = nn.Parameter(torch.empty(2 * max_positions - 1).normal_(0.0, 0.02))

    def diagonals(self, seq_len: int) -> torch.Tensor:
        """b of length 2S - 1 with bias[i, j] = b[S - 1 - i + j] (b[k] = w[M - S + k])."""
        M = self.max_positions
        if seq_len > M:
            raise ValueError(
                f"sequence or chunk length {seq_len} exceeds the relative-position bias size {M}; "
                "raise model max_positions (or use chunking)"
            )
        return self.rel_pos_bias[M - seq_len : M + seq_len - 1]

    def forward(self, seq_len: int) -> torch.Tensor:
        """(S, S) bias for a sequence (or chunk) of S positions: bias[i, j] = w[M - 1 + j - i]."""
        return _ToeplitzFromDiagonals.apply(self.diagonals(seq_len), seq_len)

    def hankel(self, seq_len: int) -> torch.Tensor:
        """c of length 2S - 1 with bias[i, S - 1 - j'] = c[i + j']: the bias seen with the keys reversed."""
        return self.diagonals(seq_len).flip(0)


class RotaryRelativePositionalBias(nn.Module):
    """bias[i, j] = <rope(a)_i, rope(b)_j> with learned a, b in R^Z (N(0, 0.02)); RoPE half-split, base 1e4."""

    def __init__(self, d_qk: int, max_positions: int):
        super().__init__()
        if d_qk % 2:
            raise ValueError(f"rotary bias needs an even z_dim, got {d_qk}")
        self.max_positions = max_positions
        self.alpha = nn.Parameter(torch.empty(1, d_qk).normal_(0.0, 0.02))
        self.beta = nn.Parameter(torch.empty(1, d_qk).normal_(0.0, 0.02))

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        S, Z = x.shape
        half = Z // 2
        freq = torch.exp(torch.arange(half, device=x.device, dtype=torch.float32) * -(math.log(10000.0) / half))
        angle = torch.arange(S, device=x.device, dtype=torch.float32)[:, None] * freq[None, :]
        sin, cos = angle.sin().to(x.dtype), angle.cos().to(x.dtype)
        x1, x2 = x[:, :half], x[:, half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(self, seq_len: int) -> torch.Tensor:
        a = self.rotate(self.alpha.expand(seq_len, -1))
        b = self.rotate(self.beta.expand(seq_len, -1))
        return a @ b.T


class MovingAverageGatedAttention(nn.Module):
    """The Mega sub-layer: EMA, then single-head gated attention per chunk, with a gated residual.

    ``forward(x: (B, L, D), mask: (B, L) bool or None) -> (B, L, D)``; L must be a multiple of the
    chunk size when chunking (``MegaEncoder`` pads for that). Data flow (fairseq/modules/moving_average_gated_attention.py):

        x_n = Norm(x) if prenorm                          v  = silu(W_v x_n + b_v)            (H)
        mx  = dropout(EMA(x_n))                           u, zr, hx = split(W_mx mx + b_mx)    (D | Z+H | D)
        u = sigmoid(u); z, r = split(silu(zr))            q, k = z * gamma[0,1] + beta[0,1]
        h = A(q, k) @ hidden_dropout(v)  (per chunk)      h = dropout(silu(hx + W_h (h * r) + b_h))
        out = x + u * (h - x)                             out = Norm(out) if postnorm
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        d_qk: int,
        n_dim: int = 16,
        chunk_size: int = -1,
        truncation: int | None = None,
        attention: str = "softmax",
        rel_pos: str = "simple",
        max_positions: int = 1024,
        norm: str = "layernorm",
        prenorm: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        bidirectional: bool = True,
    ):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        if rel_pos not in REL_POS:
            raise ValueError(f"rel_pos must be one of {REL_POS}, got {rel_pos!r}")
        self.d_model, self.d_hidden, self.d_qk = d_model, d_hidden, d_qk
        self.chunk_size = chunk_size
        self.attention = attention
        self.prenorm = prenorm
        self.scaling = d_qk**-0.5 if attention == "softmax" else None
        self.dropout = Dropout(dropout)
        self.hidden_dropout = Dropout(hidden_dropout)
        self.attention_dropout = Dropout(attn_dropout)
        self.move = MultiHeadEMA(d_model, n_dim, bidirectional, truncation)
        self.v_proj = nn.Linear(d_model, d_hidden)
        self.mx_proj = nn.Linear(d_model, d_model + d_qk + d_hidden + d_model)
        self.h_proj = nn.Linear(d_hidden, d_model)
        self.gamma = nn.Parameter(torch.empty(2, d_qk))
        self.beta = nn.Parameter(torch.empty(2, d_qk))
        positions = chunk_size if chunk_size > 0 else max_positions  # the bias is sized to the chunk
        self.rel_pos_bias: nn.Module = (
            SimpleRelativePositionalBias(positions) if rel_pos == "simple" else RotaryRelativePositionalBias(d_qk, positions)
        )
        self.norm = SequenceNorm(norm, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(linear.weight, mean=0.0, std=0.02)
            nn.init.zeros_(linear.bias)
        nn.init.normal_(self.gamma, mean=0.0, std=0.02)
        nn.init.zeros_(self.beta)

    def attention_weights(self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q, k: (B, nC, C, Z); mask: (B, nC, C) bool (True = real key) or None -> weights (B, nC, C, C)."""
        B, n_chunks, S, Z = q.shape
        bias = self.rel_pos_bias(S).to(q.dtype)
        if self.attention == "softmax":
            # bias + scaling * q k^T in one kernel (baddbmm) rather than a matmul and an add over (S, S)
            scores = torch.baddbmm(bias, q.reshape(-1, S, Z), k.reshape(-1, S, Z).transpose(1, 2), alpha=self.scaling)
            scores = scores.view(B, n_chunks, S, S)
            if mask is not None:
                pad = softmax_key_padding(mask)
                scores = scores.masked_fill(pad[:, :, None, :], float("-inf"))
            return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        if mask is None:
            scores = torch.baddbmm(bias, q.reshape(-1, S, Z), k.reshape(-1, S, Z).transpose(1, 2), alpha=1.0 / S)
        else:
            n_valid = mask.sum(dim=-1).clamp(min=1).to(q.dtype)[..., None, None]  # valid keys per chunk
            scores = torch.baddbmm(bias, (q / n_valid).reshape(-1, S, Z), k.reshape(-1, S, Z).transpose(1, 2))
        scores = scores.view(B, n_chunks, S, S)
        weights = laplace(scores) if self.attention == "laplace" else relu2(scores)
        if mask is not None:
            weights = weights * mask[:, :, None, :].to(weights.dtype)  # no renormalisation
        return weights

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        Z, H = self.d_qk, self.d_hidden
        mask = as_key_mask(mask, L)  # bool or 0/1, the same on the softmax, laplace and relu2 paths
        residual = x
        if self.prenorm:
            x = self.norm(x)
        v = F.silu(self.v_proj(x))
        mx = self.dropout(self.move(x, mask))
        u, zr, hx = torch.split(self.mx_proj(mx), [D, Z + H, D], dim=-1)
        u = torch.sigmoid(u)
        z, r = torch.split(F.silu(zr), [Z, H], dim=-1)
        q = torch.addcmul(self.beta[0], z, self.gamma[0])  # per-dimension scale and offset
        k = torch.addcmul(self.beta[1], z, self.gamma[1])

        C = self.chunk_size if 0 < self.chunk_size < L else L
        if L % C:
            raise ValueError(f"length {L} is not a multiple of the chunk size {C}; MegaEncoder pads for this")
        n_chunks = L // C
        q, k, v = q.view(B, n_chunks, C, Z), k.view(B, n_chunks, C, Z), v.view(B, n_chunks, C, H)
        chunk_mask = mask.view(B, n_chunks, C) if mask is not None else None
        if self.attention == "softmax" and isinstance(self.rel_pos_bias, SimpleRelativePositionalBias):
            # keys, values and key mask reversed per chunk: the Toeplitz bias becomes a Hankel view (biased_softmax.py)
            k, v = k.flip(2), v.flip(2)
            pad = None
            if chunk_mask is not None:
                pad = softmax_key_padding(chunk_mask.flip(2)).reshape(B * n_chunks, 1, C)
            weights = hankel_biased_softmax(q.reshape(-1, C, Z), k.reshape(-1, C, Z), self.rel_pos_bias.hankel(C), pad,
                                            self.scaling).view(B, n_chunks, C, C)
        else:
            weights = self.attention_weights(q, k, chunk_mask)
        h = torch.matmul(self.attention_dropout(weights), self.hidden_dropout(v)).view(B, L, H)

        h = self.dropout(F.silu(hx + self.h_proj(h * r)))
        out = torch.addcmul(residual, u, h - residual)  # u * h + (1 - u) * residual, the raw input
        return out if self.prenorm else self.norm(out)


class NormalizedFeedForwardNetwork(nn.Module):
    """``x + dropout(W2 hidden_dropout(silu(W1 Norm?(x) + b1)) + b2)``, then Norm if postnorm."""

    def __init__(self, d_model: int, d_ffn: int, norm: str, prenorm: bool, dropout: float, hidden_dropout: float):
        super().__init__()
        self.prenorm = prenorm
        self.fc1 = nn.Linear(d_model, d_ffn)
        self.fc2 = nn.Linear(d_ffn, d_model)
        self.dropout = Dropout(dropout)
        self.hidden_dropout = Dropout(hidden_dropout)
        self.norm = SequenceNorm(norm, d_model)
        for linear in (self.fc1, self.fc2):
            nn.init.normal_(linear.weight, mean=0.0, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        if self.prenorm:
            x = self.norm(x)
        x = self.dropout(self.fc2(self.hidden_dropout(F.silu(self.fc1(x)))))
        x = x + residual
        return x if self.prenorm else self.norm(x)


class MegaEncoderLayer(nn.Module):
    """One Mega block (official ``MegaSentenceEncoderLayer``): gated attention, then the NFFN."""

    def __init__(self, d_model: int, d_hidden: int, d_ffn: int, d_qk: int, n_dim: int, chunk_size: int,
                 truncation: int | None, attention: str, rel_pos: str, max_positions: int, norm: str, prenorm: bool,
                 dropout: float, attn_dropout: float, hidden_dropout: float, bidirectional: bool = True):
        super().__init__()
        self.mega_layer = MovingAverageGatedAttention(
            d_model, d_hidden, d_qk, n_dim, chunk_size, truncation, attention, rel_pos, max_positions, norm, prenorm,
            dropout, attn_dropout, hidden_dropout, bidirectional,
        )
        self.nffn = NormalizedFeedForwardNetwork(d_model, d_ffn, norm, prenorm, dropout, hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.nffn(self.mega_layer(x, mask))


class MegaEncoder(nn.Module):
    """Backbone ``forward(x: (B, L, D), lengths: (B,)) -> (B, L, D)`` (official ``MegaLRAEncoder`` after embedding).

    Embedding dropout, pads zeroed, n layers, the final norm when prenorm, pads zeroed again. With
    chunking, x is right-padded to a multiple of ``chunk_size`` (the padding is masked like any pad)
    and cut off again at the end, whatever the input kind.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        d_hidden: int,
        d_ffn: int,
        d_qk: int,
        n_dim: int = 16,
        chunk_size: int = -1,
        truncation: int | None = None,
        attention: str = "softmax",
        rel_pos: str = "simple",
        max_positions: int = 1024,
        norm: str = "layernorm",
        prenorm: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        bidirectional: bool = True,
    ):
        super().__init__()
        self.chunk_size = chunk_size
        self.embedding_dropout = Dropout(dropout)
        self.layers = nn.ModuleList(
            MegaEncoderLayer(d_model, d_hidden, d_ffn, d_qk, n_dim, chunk_size, truncation, attention, rel_pos,
                             max_positions, norm, prenorm, dropout, attn_dropout, hidden_dropout, bidirectional)
            for _ in range(n_layers)
        )
        self.final_norm = SequenceNorm(norm, d_model) if prenorm else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        C = self.chunk_size
        padded_len = math.ceil(L / C) * C if 0 < C < L else L
        if padded_len != L:
            x = F.pad(x, (0, 0, 0, padded_len - L))
        mask = length_mask(lengths, padded_len)
        keep = mask[..., None].to(x.dtype)
        layer_mask = None if bool(mask.all()) else mask  # no padding: skip the masking work
        x = self.embedding_dropout(x) * keep
        for layer in self.layers:
            x = layer(x, layer_mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return (x * keep)[:, :L]


def mega_block_from_hf(ours: MegaEncoderLayer, hf_block: nn.Module) -> MegaEncoderLayer:
    """Copy the weights of a Hugging Face ``MegaBlock`` (transformers' deprecated port) into ``ours``.

    Names follow the table in the module docstring. HF sizes the simple rel-pos bias 2*max_positions-1
    even when chunking but indexes it around the chunk size, so its first 2C-1 entries are the ones used.
    """
    hf = hf_block.state_dict()
    renames = {
        "mega_layer.ema_gate.damping_factor": "mega_layer.move.delta",
        "mega_layer.ema_gate.decay_factor": "mega_layer.move.alpha",
        "mega_layer.ema_gate.ema_expansion_matrix": "mega_layer.move.beta",
        "mega_layer.ema_gate.kernel_projection_matrix": "mega_layer.move.gamma",
        "mega_layer.ema_gate.residual_weight": "mega_layer.move.omega",
        "mega_layer.qk_weight": "mega_layer.gamma",
        "mega_layer.qk_bias": "mega_layer.beta",
        "mega_layer.rel_pos_bias.b_param": "mega_layer.rel_pos_bias.beta",
    }
    target = ours.state_dict()
    state = {}
    for name, value in hf.items():
        if name.endswith("_float_tensor"):
            continue
        ours_name = renames.get(name, name)
        if ours_name not in target:
            raise KeyError(f"HF parameter {name} has no counterpart ({ours_name}) in MegaEncoderLayer")
        if ours_name == "mega_layer.rel_pos_bias.rel_pos_bias":
            value = value[: target[ours_name].numel()]
        state[ours_name] = value
    missing = set(target) - set(state)
    if missing:
        raise KeyError(f"no HF weights for {sorted(missing)}")
    ours.load_state_dict(state)
    return ours
