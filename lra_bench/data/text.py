"""Text (IMDB reviews, binary sentiment): the Stanford ``aclImdb/`` folder or the hub's ``stanfordnlp/imdb``.

Sources, in order (``source: auto``): ``aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` anywhere up to
three levels below the data root; then ``hf_path`` (hub id ``stanfordnlp/imdb``, or a local folder in its
layout) when a network exists. Rows are ordered neg then pos, by numeric file id. Labels: neg 0, pos 1.
The raw text is kept as is (``<br />`` tags included), as LRA does.

Tokens: ``bytes`` (LRA: UTF-8 + 1, vocab 257; max_length 4000 by default, 1000 and 4096 as options) or
``chars`` (S4: code points, vocabulary from train with ``min_freq``, <eos> appended).

IMDB has no validation split. ``val_source: test`` (the LRA convention, default) evaluates on the test
set during training and says so in the log; ``val_source: train_holdout`` holds out a seeded
``val_fraction`` of train instead.
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
from lra_bench.data.sources import load_hub_dataset
from lra_bench.data.tokenizers import BYTE_VOCAB_SIZE, CharVocabulary, encode_bytes
from lra_bench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LABELS = ("neg", "pos")
FILE_NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
MANUAL_STEPS = (
    "Download https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz and unpack it under the data root "
    "(it makes aclImdb/), or run `make data TASK=text` on a machine with a network"
)


def read_aclimdb(folder: Path, split: str) -> list[tuple[str, int]]:
    """(text, label) rows of ``aclImdb/<split>``: neg then pos, by numeric id."""
    rows = []
    for label, name in enumerate(LABELS):
        sub = folder / split / name
        if not sub.is_dir():
            raise DataError(f"{sub} is missing: an aclImdb folder holds train/ and test/, each with neg/ and pos/. {MANUAL_STEPS}")
        files, strangers = [], []
        for p in sub.iterdir():
            m = FILE_NAME.match(p.name)
            if m:
                files.append((int(m.group(1)), int(m.group(2)), p))
            elif p.is_file():
                strangers.append(p.name)
        if strangers:
            shown = ", ".join(sorted(strangers)[:5]) + (", ..." if len(strangers) > 5 else "")
            log.warning("%s: %d file(s) not named <id>_<rating>.txt were not read: %s", sub, len(strangers), shown)
        for _, _, p in sorted(files):
            try:
                rows.append((p.read_text(encoding="utf-8"), label))
            except UnicodeDecodeError as e:
                raise DataError(f"{p}: not valid UTF-8 ({e}); re-download the review files") from e
        if not files:
            raise DataError(f"{sub} holds no <id>_<rating>.txt reviews. {MANUAL_STEPS}")
    return rows


class IMDBDataModule(LRADataModule):
    """IMDB reviews as byte (or character) ids; see the module docstring for sources and options."""

    task_name = "text"
    token_dtype = "uint16"

    def __init__(
        self,
        *args: Any,
        source: str = "auto",
        dirname: str = "aclImdb",
        hf_path: str = "stanfordnlp/imdb",
        tokenizer: str = "bytes",
        min_freq: int = 15,
        append_eos: bool = False,
        max_length: int = 4000,
        val_source: str = "test",
        val_fraction: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if source not in ("auto", "folder", "hub"):
            raise ConfigError(f"task.datamodule.source must be auto, folder or hub, got {source!r}")
        if tokenizer not in ("bytes", "chars"):
            raise ConfigError(f"task.datamodule.tokenizer must be bytes or chars, got {tokenizer!r}")
        if val_source not in ("test", "train_holdout"):
            raise ConfigError(f"task.datamodule.val_source must be test or train_holdout, got {val_source!r}")
        self.source, self.dirname, self.hf_path = source, dirname, hf_path
        self.tokenizer, self.min_freq, self.append_eos = tokenizer, min_freq, append_eos
        self.max_length, self.val_source, self.val_fraction = max_length, val_source, val_fraction
        self._raw: dict[str, list[tuple[str, int]]] | None = None
        self._vocab: CharVocabulary | None = None
        self._origin: dict[str, Any] | None = None

    # --- source ------------------------------------------------------------------------------
    def _locate(self) -> dict[str, Any]:
        """Identify the source without reading it (for the cache key)."""
        if self._origin is None:
            folder_error = None
            if self.source in ("auto", "folder"):
                try:
                    folder = find_dataset_dir(self.data_dir, self.dirname, [], fill_hint=MANUAL_STEPS)
                    if (folder / "train").is_dir() and (folder / "test").is_dir():
                        # every review file read (names, sizes, times): an added or edited review builds a new cache
                        ids = {s: source_identity(folder / s, ("pos/*.txt", "neg/*.txt")) for s in ("train", "test")}
                        self._origin = {"kind": "folder", "path": str(folder), "identity": ids}
                        return self._origin
                except DataError as e:
                    folder_error = e
                if self.source == "folder":
                    raise folder_error or DataError(f"{self.data_dir}/{self.dirname} lacks train/ or test/. {MANUAL_STEPS}")
            self._origin = {"kind": "hub", "path": self.hf_path}
        return self._origin

    def _rows(self) -> dict[str, list[tuple[str, int]]]:
        if self._raw is None:
            origin = self._locate()
            if origin["kind"] == "folder":
                folder = Path(origin["path"])
                self._raw = {s: read_aclimdb(folder, s) for s in ("train", "test")}
            else:
                hint = f"Looked for {self.dirname}/ up to 3 levels below {self.data_dir}. {MANUAL_STEPS}"
                ds = load_hub_dataset(self.hf_path, self.data_dir / "hf", hint)
                self._raw = {}
                for s in ("train", "test"):
                    if s not in ds:
                        raise DataError(f"{self.hf_path} has no {s} split (found {list(ds)}). {MANUAL_STEPS}")
                    self._raw[s] = list(zip(ds[s]["text"], ds[s]["label"]))
            for s, rows in self._raw.items():
                bad = next((i for i, (_, y) in enumerate(rows) if y not in (0, 1)), None)
                if bad is not None:
                    raise DataError(f"IMDB {s} row {bad}: label {rows[bad][1]!r} is not 0 (neg) or 1 (pos)")
        return self._raw

    # --- preprocessing -----------------------------------------------------------------------
    def cache_options(self) -> dict[str, Any]:
        return {
            "task": "text", "source": self._locate(), "tokenizer": self.tokenizer, "min_freq": self.min_freq,
            "append_eos": self.append_eos, "max_length": self.max_length, "val_source": self.val_source,
            "val_fraction": self.val_fraction, "seed": self.seed if self.val_source == "train_holdout" else None,
        }

    def _splits(self) -> dict[str, list[tuple[str, int]]]:
        rows = self._rows()
        if self.val_source == "test":
            return {"train": rows["train"], "val": rows["test"], "test": rows["test"]}
        order = np.random.default_rng(self.seed).permutation(len(rows["train"]))
        n_val = int(round(self.val_fraction * len(order)))
        return {
            "train": [rows["train"][i] for i in sorted(order[n_val:])],
            "val": [rows["train"][i] for i in sorted(order[:n_val])],
            "test": rows["test"],
        }

    def _vocabulary(self) -> CharVocabulary | None:
        if self.tokenizer == "bytes":
            return None
        return CharVocabulary.build((t for t, _ in self._splits()["train"]), self.min_freq)

    def write_split(self, split: str, folder: Path) -> dict[str, Any]:
        if split == "train":
            self._vocab = self._vocabulary()
            if self.val_source == "test":
                log.info("IMDB has no validation split: validating on the test set (the LRA convention)")
        rows = self._splits()[split]
        cut = 0
        with ArrowRowWriter(folder / f"{split}.arrow", dtype=self.token_dtype) as writer:
            for text, label in rows:
                text = text or " "  # an empty review becomes one space: every row keeps a length >= 1
                if self._vocab is None:
                    ids = encode_bytes(text.encode("utf-8"), self.max_length)
                else:
                    ids = self._vocab.encode(text, self.max_length, self.append_eos)
                cut += len(ids) >= self.max_length
                writer.add(ids, int(label))
        if cut:
            log.warning("IMDB %s: %d of %d reviews reach task.max_length=%d and are cut there%s", split, cut, len(rows),
                        self.max_length, " (every review: is max_length below the data's lengths?)" if cut == len(rows) else "")
        stats = {"n": writer.n_rows, "label_counts": np.bincount([y for _, y in rows], minlength=2).tolist()}
        if split == "train":
            stats["vocab_size"] = len(self._vocab) if self._vocab else BYTE_VOCAB_SIZE
            if self._vocab is not None:
                stats["chars"] = "".join(self._vocab.chars)
        if split == "test":
            self._raw = None  # free the raw text once every split is written
        return stats

    @property
    def vocab_size(self) -> int:
        if self.tokenizer == "bytes":
            return BYTE_VOCAB_SIZE
        return int(self.cache.build(self.write_split)["stats"]["train"]["vocab_size"])
