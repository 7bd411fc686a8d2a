"""BigBird block-sparse attention (Zaheer et al., 2020, arXiv 2007.14062, the ITC variant), and LRA's code of it:

    y_i = sum_{j in N(i)} softmax_j(q_i . k_j / sqrt(E)) v_j,

where the sequence is cut into blocks of b = ``block_size`` positions (N_b blocks) and the keys N(i) of a query
in block I are
    - every key, when I = 0 or I = N_b - 1 (the two global blocks);
    - otherwise block 0 and block N_b - 1 (global), blocks I - 1, I, I + 1 (sliding window) and r =
      ``num_rand_blocks`` random blocks R_h[I], a fixed table per layer and head.

Cost: O(L (5 + r) b E) time and memory, (5 + r) b keys per query, plus the 2b global queries over all L keys.
Nothing of size (L, L) is formed.

Reference: ``google-research/long-range-arena`` ``lra_benchmarks/models/bigbird/bigbird_attention.py``
(``BigBirdAttention``, ``sparse_dot_product_attention``, ``band_start_block_rand_multi_attention_pad``,
``get_block_rand_mask``) and ``bigbird.py`` (``block_size`` 64 on every task, ``num_rand_blocks`` 3 (the
attention's default, never overridden), ``connectivity_seed`` = the layer index, q/k/v/out without bias,
xavier-uniform). As there:
- Block layout: LRA pads every example to the task's length ``max_length`` and the attention pads it further
  by ``block_size - L % block_size`` (a whole block of pads when L is already a multiple), so N_b =
  ``max_length // b + 1``. Which block is the last (global) one and the random table follow that layout,
  whatever the batch's padded length: blocks past the batch are all pads in LRA too (masked keys, pad
  queries), so a batch padded only to its longest row gives, at real positions, what LRA's fixed-length
  padding gives. Hence a row shorter than ``max_length`` sees its trailing global block as pads (LRA's
  behaviour), and outputs at real positions do not depend on how much padding the batch carries.
- Random table (``lra_random_blocks``): LRA's ``get_block_rand_mask`` on numpy's legacy generator seeded with
  ``seed``, heads drawn one after another; r blocks per row among the first ``random_span`` = 1024 tokens
  (LRA's ``last_idx = min(L, 1024)``), never the row's window blocks nor the global ones, no block twice.
  Drawn once (a buffer, saved in checkpoints), as LRA's jit fixes it per layer.
- Masking: keys where ``mask`` is False get no weight (LRA adds -1e4, here they get exactly zero) and outputs
  at masked queries are zeroed (LRA's ``seq_m_pad``). A block listed twice in a row (possible in tables fed
  from elsewhere, e.g. Hugging Face's) counts twice, as in both references' concatenated keys.
- No attention dropout: LRA's sparse path applies none (its ``dropout_rate`` reaches no op), so ``dropout`` is
  accepted and unused.

``lra_code=True`` (LRA's code, defects included): ``bigbird_attention.py:487`` pads the bool padding mask with
``constant_values=-1e9``, which becomes True as a bool, so the ``block_size - L % block_size`` zero vectors appended
to the input (q = k = v = 0) are attendable keys of every query (score 0, value 0: they take weight and add nothing);
the layout is that of the batch's own length L (LRA's batches always have the task's length), and layer l's random
blocks are drawn with seed l (``bigbird.py:207``, ``connectivity_seed=lyr``; the encoder passes ``layer_index``).
By default padding never counts: appended positions are masked like pads.

Differences from LRA (default):
- Seeds: LRA seeds layer l with l; ``seed=None`` draws a seed from torch's generator at construction (reproducible
  under the run's seed, different per layer); with ``lra_code`` the seed is the layer index.
- The appended block padding is masked (above).
- A row with fewer candidate blocks than r (layouts of a few blocks, where LRA's numpy assignment fails)
  leaves the missing entries empty (no keys).
- ``extra_pad_block=False`` pads only to the next block multiple (Hugging Face's layout); ``use_random_blocks``
  sets an explicit table (the parity test feeds Hugging Face's).
- Implementation: the window, global and random key blocks of every non-global query block are gathered into
  one (5 + r) b-key list (LRA and Hugging Face write out the first, second, middle, second-last and last rows
  separately); a window slot that repeats a global block (rows 1 and N_b - 2) is left empty, which is the
  4 + r-block list LRA and Hugging Face use there.

Shapes: B batch, L length, D model dim, H heads, E = d_qkv / H per-head dim, b block size, N_b layout blocks,
n blocks in the batch, r random blocks per row, W = 5 + r key blocks per non-global query block.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.models.attention.heads import key_mask, qkv_width


def _candidates(a: np.ndarray, i: int, n_blocks: int, last: int) -> np.ndarray:
    """The blocks LRA's ``get_block_rand_mask`` may draw for query block i (``a`` = blocks 1 .. N_b - 2)."""
    if i == 1:
        return a[2:last]
    if i == 2:
        return a[3:last]
    if i == n_blocks - 3:
        return a[: last - 4]
    if i == n_blocks - 2:
        return a[: last - 3]
    start, end = i - 2, i
    if start > last:
        return a[:last]
    if end + 1 == last:
        return a[:start]
    return np.concatenate((a[:start], a[end + 1 : last]))


def lra_random_blocks(n_blocks: int, block_size: int, n_rand: int, n_heads: int, seed: int,
                      random_span: int | None = 1024) -> torch.Tensor:
    """LRA's random block table: (H, N_b - 2, r) long; row I - 1 holds query block I's random key blocks.

    numpy's legacy generator seeded once, heads drawn in turn (LRA's ``onp.random.seed(connectivity_seed)``
    then one ``get_block_rand_mask`` per head). Blocks are drawn among those that end within the first
    ``random_span`` tokens (None: the whole layout). Entries a short layout cannot fill hold N_b (no block).
    """
    rng = np.random.RandomState(seed)
    a = np.arange(1, n_blocks - 1)
    last = n_blocks - 1
    if random_span is not None:
        last_idx = min(n_blocks * block_size, random_span)
        if last_idx > 2 * block_size:
            last = last_idx // block_size - 1
    table = np.full((n_heads, max(n_blocks - 2, 0), n_rand), n_blocks, dtype=np.int64)
    for h in range(n_heads):
        for i in range(1, n_blocks - 1):
            pick = rng.permutation(_candidates(a, i, n_blocks, last))[:n_rand]
            table[h, i - 1, : len(pick)] = pick
    return torch.from_numpy(table)


def key_blocks(random_blocks: torch.Tensor) -> torch.Tensor:
    """(H, N_b - 2, r) random table -> (H, N_b - 2, 5 + r) key blocks of query blocks 1 .. N_b - 2:
    [0, I - 1, I, I + 1, N_b - 1, R_h[I]], a window slot that repeats a global block set to N_b (empty)."""
    H, rows, _ = random_blocks.shape
    n_blocks = rows + 2
    i = torch.arange(1, n_blocks - 1, device=random_blocks.device)
    empty = torch.full_like(i, n_blocks)
    fixed = torch.stack([
        torch.zeros_like(i),
        torch.where(i - 1 == 0, empty, i - 1),
        i,
        torch.where(i + 1 == n_blocks - 1, empty, i + 1),
        torch.full_like(i, n_blocks - 1),
    ], dim=-1)  # (N_b - 2, 5)
    return torch.cat([fixed.expand(H, -1, -1), random_blocks], dim=-1)


class BigBirdAttention(nn.Module):
    """Multi-head BigBird block-sparse attention (global + sliding window + random blocks).

    ``max_length``: the longest sequence (the encoder's position-table length), which fixes the block layout;
    None takes the layout of each batch's length (LRA's computation for that tensor, then not padding
    invariant). ``random_span``: random blocks come from the first that many tokens (LRA: 1024; None: all).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_qkv: int | None = None,
        dropout: float = 0.0,
        max_length: int | None = None,
        block_size: int = 64,
        num_rand_blocks: int = 3,
        random_span: int | None = 1024,
        extra_pad_block: bool = True,
        seed: int | None = None,
        lra_code: bool = False,
        layer_index: int | None = None,
    ):
        super().__init__()
        d_qkv = qkv_width(d_model, n_heads, d_qkv)
        if lra_code and not extra_pad_block:
            raise ValueError("lra_code=True pads by block_size - L % block_size (a whole block when L is a multiple): "
                             "extra_pad_block must stay True")
        self.lra_code = lra_code
        if lra_code and seed is None and layer_index is not None:
            seed = layer_index  # LRA: connectivity_seed=lyr (bigbird.py:207)
        self.n_heads = n_heads
        self.dropout = dropout  # unused: LRA's block-sparse path has no attention dropout
        self.max_length = max_length
        self.block_size = block_size
        self.num_rand_blocks = num_rand_blocks
        self.random_span = random_span
        self.extra_pad_block = extra_pad_block
        self.seed = int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed
        self.query = nn.Linear(d_model, d_qkv, bias=False)
        self.key = nn.Linear(d_model, d_qkv, bias=False)
        self.value = nn.Linear(d_model, d_qkv, bias=False)
        self.out = nn.Linear(d_qkv, d_model, bias=False)
        for lin in (self.query, self.key, self.value, self.out):
            nn.init.xavier_uniform_(lin.weight)
        table = self._draw(self.layout_blocks(max_length)) if max_length is not None else None
        self.register_buffer("random_blocks", table)
        self._tables: dict[int, torch.Tensor] = {}  # per-length tables when max_length is None

    def layout_blocks(self, length: int) -> int:
        """N_b, the number of blocks of a length-``length`` layout."""
        if self.extra_pad_block:
            return length // self.block_size + 1
        return -(-length // self.block_size)

    def _draw(self, n_blocks: int) -> torch.Tensor:
        return lra_random_blocks(n_blocks, self.block_size, self.num_rand_blocks, self.n_heads, self.seed,
                                 self.random_span)

    def use_random_blocks(self, table: torch.Tensor) -> None:
        """Replace the random table by ``table``: (H, N_b - 2, r) long, N_b the layout of ``max_length``."""
        if self.random_blocks is None or table.shape != self.random_blocks.shape:
            want = None if self.random_blocks is None else tuple(self.random_blocks.shape)
            raise ValueError(f"random block table must have shape {want}, got {tuple(table.shape)}")
        self.random_blocks.copy_(table)

    def _table(self, length: int) -> torch.Tensor:
        n_blocks = self.layout_blocks(length)
        if self.lra_code and (self.random_blocks is None or self.random_blocks.size(1) + 2 != n_blocks):
            if n_blocks not in self._tables:  # LRA: the layout of the batch's own length
                self._tables[n_blocks] = self._draw(n_blocks)
            return self._tables[n_blocks]
        if self.random_blocks is not None:
            if length > self.max_length:
                raise ValueError(f"sequence length {length} exceeds BigBird's max_length ({self.max_length}); "
                                 "raise model.net.backbone.max_length")
            return self.random_blocks
        if n_blocks not in self._tables:
            self._tables[n_blocks] = self._draw(n_blocks)
        return self._tables[n_blocks]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, D); mask: (B, L) bool, True where a position may be attended, or None (all) -> (B, L, D)."""
        B, L, _ = x.shape
        H, b = self.n_heads, self.block_size
        n = self.layout_blocks(L) if self.lra_code else -(-L // b)  # blocks in this batch
        pad = n * b - L
        q, k, v = (proj(x).view(B, L, H, -1).transpose(1, 2) for proj in (self.query, self.key, self.value))
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        # LRA pads its bool mask with -1e9, i.e. True: the appended zero vectors are attended (lra_code)
        valid = F.pad(valid, (0, pad), value=self.lra_code)  # (B, n b)
        y = self._attend(q, k, v, valid, self._table(L).to(x.device), n)  # (B, H, n b, E)
        y = y[:, :, :L]
        if mask is not None:
            y = y * mask[:, None, :, None].to(y.dtype)  # LRA zeroes masked queries (seq_m_pad)
        return self.out(y.transpose(1, 2).reshape(B, L, -1))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                table: torch.Tensor, n: int) -> torch.Tensor:
        """q, k, v: (B, H, n b, E); valid: (B, n b); table: (H, N_b - 2, r) -> (B, H, n b, E)."""
        B, H, _, E = q.shape
        b = self.block_size
        n_layout = table.size(1) + 2
        # query blocks 0 and N_b - 1 are global; the rest of the batch's blocks are the sparse rows 1 .. n_mid
        n_mid = min(n, n_layout - 1) - 1
        last_global = n == n_layout and n_layout > 1
        qb = q.view(B, H, n, b, E)
        glob = qb[:, :, [0, n - 1]] if last_global else qb[:, :, :1]  # (B, H, 1 or 2, b, E)
        yg = self._global(glob.reshape(B, H, -1, E), k, v, valid).view_as(glob)
        parts = [yg[:, :, :1]]
        if n_mid > 0:
            parts.append(self._sparse(qb[:, :, 1 : 1 + n_mid], k, v, valid, table[:, :n_mid], n))
        if last_global:
            parts.append(yg[:, :, 1:])
        return torch.cat(parts, dim=2).view(B, H, n * b, E)

    @staticmethod
    def _global(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Global queries over every key: q (B, H, g b, E), k, v (B, H, n b, E) -> (B, H, g b, E)."""
        # a fully masked row attends to all (its queries are zeroed)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(valid)[:, None, None, :])

    def _sparse(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                table: torch.Tensor, n: int) -> torch.Tensor:
        """Sparse rows: q (B, H, n_mid, b, E) over their W key blocks -> (B, H, n_mid, b, E)."""
        B, H, n_mid, b, E = q.shape
        idx = key_blocks(table)  # (H, n_mid, W); entries >= n are blocks past the batch or empty slots
        W = idx.size(-1)
        outside = idx >= n
        heads = torch.arange(H, device=q.device)[:, None, None]
        flat = (heads * n + idx.masked_fill(outside, 0)).reshape(-1)  # any in-range block: its weight is 0
        kg = k.reshape(B, H * n, b, E).index_select(1, flat).view(B, H, n_mid, W * b, E)
        vg = v.reshape(B, H * n, b, E).index_select(1, flat).view(B, H, n_mid, W * b, E)
        ok = valid.view(B, n, b).index_select(1, idx.masked_fill(outside, 0).reshape(-1)).view(B, H, n_mid, W, b)
        ok = (ok & ~outside[None, :, :, :, None]).view(B * H, n_mid, 1, W * b)
        ok = ok | ~ok.any(-1, keepdim=True)  # a block with no valid key holds only masked queries (zeroed)
        y = F.scaled_dot_product_attention(q.reshape(B * H, n_mid, b, E), kg.view(B * H, n_mid, W * b, E),
                                           vg.view(B * H, n_mid, W * b, E), attn_mask=ok)
        return y.view(B, H, n_mid, b, E)
