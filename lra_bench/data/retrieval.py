"""Retrieval (AAN citation pairs): ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` from the LRA release.

Rows have no header and 5 tab-separated fields ``label, id1, id2, text1, text2``; LRA parses the label
as a float and casts it to int, and reads with ``use_quote_delim=False``, so quote characters are
literal text (no CSV quoting here either). The files are streamed line by line in binary and each
document is truncated while parsing, so the 8.5 GB train file never sits in memory. The eval file is
the validation split.

Tokens: ``bytes`` (LRA: the document's UTF-8 bytes + 1, vocab 257, ``max_length`` 4000 per document) or
``chars`` (S4: code points, vocabulary from train with ``min_freq``, <eos> appended). Batches are
``PairBatch(tokens, lengths, tokens2, lengths2, labels)``; the model combines the two pooled documents
as ``[u, v]`` (LRA, Mega) or ``[u, v, u*v, u-v]`` (S4) by ``model.net.pair_features``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lra_bench.data.base import LRADataModule
from lra_bench.data.cache import ArrowRowWriter, source_identity
from lra_bench.data.locate import find_dataset_dir
from lra_bench.data.tokenizers import BYTE_VOCAB_SIZE, CharVocabulary, encode_bytes
from lra_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
FILL_HINT = (
    "unpack the LRA release (https://storage.googleapis.com/long-range-arena/lra_release.gz) under the data root, "
    "or fetch data/aan/new_aan_pairs.*.tsv from the hub dataset OpenNLPLab/lra into <root>/tsv_data/ "
    "(`make data TASK=retrieval` does either when a network exists)"
)


def read_aan_tsv(path: Path, max_bytes: int) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Yield (line_number, label, doc1, doc2), each document cut to its first ``max_bytes`` bytes."""
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise DataError(
                    f"{path}:{line_no}: expected 5 tab-separated fields (label, id1, id2, text1, text2), got "
                    f"{len(fields)}; the file is malformed or truncated: fetch it again"
                )
            try:
                value = float(fields[0])
            except ValueError:
                raise DataError(f"{path}:{line_no}: label {fields[0][:20]!r} is not a number (expected 0 or 1)") from None
            if value not in (0.0, 1.0):  # inf, nan, 0.5, 2 ... (int(float('inf')) raised OverflowError, naming nothing)
                raise DataError(f"{path}:{line_no}: label {value:g} is out of range (expected 0 or 1)")
            label = int(value)
            yield line_no, label, fields[3][:max_bytes], fields[4][:max_bytes]


class AANDataModule(LRADataModule):
    """AAN document pairs; see the module docstring."""

    task_name = "retrieval"
    token_dtype = "uint16"

    def __init__(
        self,
        *args: Any,
        dirname: str = "tsv_data",
        tokenizer: str = "bytes",
        min_freq: int = 1,
        append_eos: bool = False,
        max_length: int = 4000,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if tokenizer not in ("bytes", "chars"):
            raise ConfigError(f"task.datamodule.tokenizer must be bytes or chars, got {tokenizer!r}")
        self.dirname, self.tokenizer, self.min_freq, self.append_eos = dirname, tokenizer, min_freq, append_eos
        self.max_length = max_length
        self._source_dir: Path | None = None
        self._vocab: CharVocabulary | None = None

    @property
    def source_dir(self) -> Path:
        if self._source_dir is None:
            self._source_dir = find_dataset_dir(self.data_dir, self.dirname, list(SPLIT_FILES.values()), FILL_HINT)
        return self._source_dir

    def cache_options(self) -> dict[str, Any]:
        return {
            "task": "retrieval", "tokenizer": self.tokenizer, "min_freq": self.min_freq, "append_eos": self.append_eos,
            "max_length": self.max_length,
            "sources": {s: source_identity(self.source_dir / f) for s, f in SPLIT_FILES.items()},
        }

    def _decode(self, path: Path, line_no: int, doc: bytes) -> str:
        # A cut at max_bytes may split a multi-byte character: drop that partial tail only.
        try:
            return doc.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start >= len(doc) - 3 and e.reason == "unexpected end of data":
                return doc[: e.start].decode("utf-8")
            raise DataError(f"{path}:{line_no}: not valid UTF-8 at byte {e.start} of a document; fetch the file again") from e

    def _encode(self, path: Path, line_no: int, doc: bytes) -> np.ndarray:
        doc = doc or b" "  # an empty document becomes one space: every row keeps a length >= 1
        if self._vocab is None:
            return encode_bytes(doc, self.max_length)
        return self._vocab.encode(self._decode(path, line_no, doc), self.max_length, self.append_eos)

    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        src = self.source_dir / SPLIT_FILES[split]
        # chars need the whole document cut to max_length characters: read up to 4 bytes per character
        max_bytes = self.max_length if self.tokenizer == "bytes" else 4 * self.max_length
        if split == "train" and self.tokenizer == "chars":
            texts = (self._decode(src, n, d) for n, _, a, b in read_aan_tsv(src, max_bytes) for d in (a, b))
            self._vocab = CharVocabulary.build(texts, self.min_freq)
        counts = np.zeros(2, dtype=np.int64)
        cut = 0
        with ArrowRowWriter(folder / f"{split}.arrow", dtype=self.token_dtype, paired=True, rows_per_batch=1024) as w:
            for line_no, label, doc1, doc2 in read_aan_tsv(src, max_bytes):
                ids1, ids2 = self._encode(src, line_no, doc1), self._encode(src, line_no, doc2)
                cut += (len(ids1) >= self.max_length) + (len(ids2) >= self.max_length)
                w.add(ids1, label, ids2)
                counts[label] += 1
        if cut:
            log.warning("%s: %d of %d documents reach task.max_length=%d and are cut there", src, cut, 2 * w.n_rows,
                        self.max_length)
        if w.n_rows == 0:
            raise DataError(f"{src}: no rows; the file is empty or truncated: fetch it again")
        stats: dict[str, Any] = {"n": w.n_rows, "label_counts": counts.tolist(), "source": str(src)}
        if split == "train":
            stats["vocab_size"] = len(self._vocab) if self._vocab else BYTE_VOCAB_SIZE
        return stats

    @property
    def vocab_size(self) -> int:
        if self.tokenizer == "bytes":
            return BYTE_VOCAB_SIZE
        return int(self.cache.build(self.write_split)["stats"]["train"]["vocab_size"])
