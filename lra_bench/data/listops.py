"""ListOps: ``listops-1000/basic_{train,val,test}.tsv`` (LRA release or ``data_prep.listops``).

Tokenisation is LRA's (``listops/input_pipeline.py`` after c209b2a): every ``]`` becomes ``X``,
parentheses are dropped, the rest is split on whitespace. The vocabulary is fixed (LRA builds it
from a Python set, so its ids are arbitrary); its size, 17, is LRA's:

    0 <pad>   1 <unk> (reserved, as LRA's OOV id; unknown tokens are an error, not <unk>)
    2..11 digits 0..9   12 [MIN   13 [MAX   14 [MED   15 [SM   16 X (closing bracket)

Rows longer than ``max_length`` tokens are truncated (LRA: 2000) and counted in the cache stats.
``append_eos`` (S4: ``l_max`` 2048 including an appended ``<eos>``, vocabulary 18) adds id 17 = ``<eos>`` after
the first ``max_length - 1`` tokens.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from lra_bench.data.base import LRADataModule
from lra_bench.data.cache import ArrowRowWriter, source_identity
from lra_bench.data.locate import find_dataset_dir
from lra_bench.errors import DataError

log = logging.getLogger(__name__)

VOCAB = ("<pad>", "<unk>", *"0123456789", "[MIN", "[MAX", "[MED", "[SM", "X")
VOCAB_SIZE = len(VOCAB)
EOS_ID = VOCAB_SIZE  # only with append_eos: the vocabulary is then 18, as S4's
NUM_CLASSES = 10
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}

# Each token becomes one character, so a whole row maps to ids with one table lookup.
_COMPACT = (("[MIN", "a"), ("[MAX", "b"), ("[MED", "c"), ("[SM", "d"), ("]", "X"))
_ID_OF_CHAR = np.full(256, 255, dtype=np.uint8)
for _i, _ch in enumerate("0123456789abcdX"):
    _ID_OF_CHAR[ord(_ch)] = 2 + _i
_WHITESPACE_AND_PARENS = str.maketrans({"(": " ", ")": " "})
_PLACEHOLDERS = re.compile("[abcd]")  # must not occur in the source, or they would pass for operators


def tokenize(source: str) -> np.ndarray | None:
    """LRA ListOps tokens of one source string as uint8 ids; None if it holds an unknown token."""
    if _PLACEHOLDERS.search(source):
        return None
    text = source.translate(_WHITESPACE_AND_PARENS)
    n_tokens = len(text.split())
    compact = text
    for word, ch in _COMPACT:
        compact = compact.replace(word, ch)
    compact = "".join(compact.split())
    if len(compact) != n_tokens or not compact.isascii():
        return None
    ids = _ID_OF_CHAR[np.frombuffer(compact.encode("ascii"), dtype=np.uint8)]
    if n_tokens == 0 or (ids == 255).any():
        return None
    return ids


def detokenize(ids: np.ndarray) -> str:
    return " ".join("<eos>" if int(i) == EOS_ID else VOCAB[int(i)] for i in ids)


def read_listops_tsv(path: Path):
    """Yield (line_number, source, label) from a release-format ListOps TSV, validating every row."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head:
        raise DataError(f"{path}: not UTF-8 text (UTF-16 or binary); the release's ListOps files are UTF-8 TSV: "
                        "convert the file or regenerate it with `python -m data_prep.listops`")
    try:
        yield from _read_listops_rows(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text at byte {e.start} ({e.reason}); the release's ListOps files are UTF-8 "
                        "TSV: fix the file or regenerate it with `python -m data_prep.listops`") from None


def _read_listops_rows(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != "Source\tTarget":
            raise DataError(
                f"{path}:1: expected the header 'Source<TAB>Target' of the LRA ListOps release, got {header[:60]!r}. "
                "Regenerate the file with `python -m data_prep.listops --out-dir <dir>`"
            )
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(
                    f"{path}:{line_no}: expected 2 tab-separated fields (Source, Target), got {len(fields)}; "
                    "the file is malformed or truncated: regenerate it with `python -m data_prep.listops`"
                )
            source, target = fields
            if not re.fullmatch(r"[0-9]", target.strip()):  # isdigit() accepts '²', which int() refuses
                raise DataError(
                    f"{path}:{line_no}: label {target[:20]!r} is not an integer in 0..9; fix or regenerate the file"
                )
            yield line_no, source, int(target)


class ListOpsDataModule(LRADataModule):
    """ListOps (10 classes) from the release layout or the local generator, cached as uint8 ids."""

    task_name = "listops"

    def __init__(self, *args: Any, dirname: str = "listops-1000", max_length: int = 2000, append_eos: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dirname = dirname
        self.max_length = max_length
        self.append_eos = append_eos
        self._source_dir: Path | None = None

    @property
    def source_dir(self) -> Path:
        if self._source_dir is None:
            self._source_dir = find_dataset_dir(
                self.data_dir,
                self.dirname,
                list(SPLIT_FILES.values()),
                fill_hint=f"python -m data_prep.listops --out-dir {self.data_dir / self.dirname} "
                "(or `make data`), or unpack lra_release.gz under the data root",
            )
        return self._source_dir

    def cache_options(self) -> dict[str, Any]:
        return {
            "task": "listops",
            "tokenizer": "lra-v1",
            "vocab": VOCAB,
            "max_length": self.max_length,
            "append_eos": self.append_eos,
            "sources": {s: source_identity(self.source_dir / f) for s, f in SPLIT_FILES.items()},
        }

    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        src = self.source_dir / SPLIT_FILES[split]
        path = folder / f"{split}.arrow"
        truncated = 0
        labels = np.zeros(NUM_CLASSES, dtype=np.int64)
        with ArrowRowWriter(path, dtype=self.token_dtype) as writer:
            for line_no, source, label in read_listops_tsv(src):
                ids = tokenize(source)
                if ids is None:
                    raise DataError(
                        f"{src}:{line_no}: unknown token in the source (ListOps allows [MIN [MAX [MED [SM ] 0-9 and "
                        "parentheses); fix or regenerate the file with `python -m data_prep.listops`"
                    )
                room = self.max_length - 1 if self.append_eos else self.max_length
                if len(ids) > room:
                    ids = ids[:room]
                    truncated += 1
                if self.append_eos:
                    ids = np.append(ids, np.uint8(EOS_ID))
                writer.add(ids, label)
                labels[label] += 1
        if writer.n_rows == 0:
            raise DataError(f"{src}: no rows after the header; the file is empty or truncated: regenerate it")
        if truncated:
            log.warning("%s: %d of %d rows are longer than task.max_length=%d tokens and were truncated%s", src, truncated,
                        writer.n_rows, self.max_length, " (every row: is max_length below the data's lengths?)"
                        if truncated == writer.n_rows else "")
        return {"n": writer.n_rows, "truncated": truncated, "label_counts": labels.tolist(), "source": str(src)}
