"""Text tokenisers shared by Text (IMDB) and Retrieval (AAN).

- ``bytes`` (LRA, Mega): UTF-8 bytes + 1, id 0 = pad, vocab 257 (LRA's ``ByteTextEncoder``).
- ``chars`` (S4): code points with a vocabulary built from the train split, keeping characters seen at
  least ``min_freq`` times; ids 0 <pad>, 1 <unk>, 2 <eos>, then characters by descending count (ties by
  code point, so the vocabulary is deterministic). S4 appends <eos> (``append_eos``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

BYTE_VOCAB_SIZE = 257
CHAR_SPECIALS = ("<pad>", "<unk>", "<eos>")
UNK, EOS = 1, 2


def encode_bytes(data: bytes, max_length: int) -> np.ndarray:
    """The first ``max_length`` UTF-8 bytes as ids 1..256 (uint16)."""
    return np.frombuffer(data[:max_length], dtype=np.uint8).astype(np.uint16) + 1


class CharVocabulary:
    """Code-point vocabulary with <pad>, <unk>, <eos>; built once from the train texts."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.index = {c: i + len(CHAR_SPECIALS) for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int) -> CharVocabulary:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], ord(c)))
        return cls(kept)

    def __len__(self) -> int:
        return len(CHAR_SPECIALS) + len(self.chars)

    def encode(self, text: str, max_length: int, append_eos: bool = False) -> np.ndarray:
        """Ids of the first characters (``max_length`` in all, the <eos> included when appended)."""
        room = max_length - 1 if append_eos else max_length
        get = self.index.get
        ids = [get(c, UNK) for c in text[:room]]
        if append_eos:
            ids.append(EOS)
        return np.asarray(ids, dtype=np.uint16)
