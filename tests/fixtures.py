"""Small data trees in the exact official formats, written by the tests (no downloads)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

RELEASE = Path("lra_release") / "lra_release"

AAN_TEXTS = [
    'We use "quoted" words and the "attention" model',  # literal quotes: no CSV quoting
    "Résumé of naïve Bayes — ünïcödé text 数据",  # non-ASCII UTF-8
    "short",
    "a longer document " * 20,
]


def write_aan(root: Path, n: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``<root>/lra_release/lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv``: no header, 5 fields."""
    n = n or {"train": 24, "eval": 8, "test": 8}
    rng = np.random.default_rng(seed)
    folder = root / RELEASE / "tsv_data"
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in n.items():
        lines = []
        for i in range(count):
            label = int(rng.integers(0, 2))
            a, b = rng.choice(len(AAN_TEXTS), 2)
            lines.append(f"{float(label)}\tP{i:03d}-a\tP{i:03d}-b\t{AAN_TEXTS[a]} {i}\t{AAN_TEXTS[b]} {2 * i}")
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


IMDB_TEXTS = {
    "pos": ["A wonderful film.<br /><br />Loved it.", "Brilliant — a chef-d'œuvre!", "Great fun"],
    "neg": ["Terrible.<br />Just terrible.", "Dull and slow", "Worst movie ever; ünwatchable"],
}


def write_aclimdb(root: Path, per_class: int = 6) -> Path:
    """``<root>/aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt`` (ratings 1-4 neg, 7-10 pos)."""
    folder = root / "aclImdb"
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            sub = folder / split / label
            sub.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rating = 1 + i % 4 if label == "neg" else 7 + i % 4
                text = f"{IMDB_TEXTS[label][i % 3]} ({split} {i})"
                (sub / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")
    (folder / "train" / "unsup").mkdir(exist_ok=True)  # present in the real archive, ignored
    return folder


def write_imdb_hub_layout(folder: Path, per_class: int = 6) -> Path:
    """A local copy of the hub repo ``stanfordnlp/imdb``: ``plain_text/{train,test}-00000-of-00001.parquet``."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    (folder / "plain_text").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [(f"{IMDB_TEXTS[name][i % 3]} ({split} {i})", y) for y, name in enumerate(("neg", "pos")) for i in range(per_class)]
        ds = Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features)
        ds.to_parquet(str(folder / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return folder


def cifar_rgb(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def write_cifar_batches(root: Path, per_batch: int = 8) -> Path:
    """``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}``: pickled dicts with bytes keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        rgb, labels = cifar_rgb(per_batch, seed=i)
        data = rgb.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R plane, G plane, B plane per row
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": data,
                 b"filenames": [f"img_{k}.png".encode() for k in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def write_cifar_hub_layout(folder: Path, per_batch: int = 8) -> Path:
    """A local copy of the hub repo ``uoft-cs/cifar10``: column ``img`` (PNG images) and ``label``."""
    from datasets import ClassLabel, Dataset, Features, Image

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    features = Features({"img": Image(), "label": ClassLabel(names=names)})
    (folder / "plain_text").mkdir(parents=True, exist_ok=True)
    parts = {"train": [cifar_rgb(per_batch, seed=k) for k in range(5)], "test": [cifar_rgb(per_batch, seed=5)]}
    for split, batches in parts.items():
        rgb = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        ds = Dataset.from_dict({"img": [png(im) for im in rgb], "label": labels.tolist()}, features=features)
        ds.to_parquet(str(folder / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return folder


def png(array: np.ndarray) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write_pathfinder_tree(root: Path, resolution: int = 32, difficulty: str = "curv_contour_length_14",
                          per_batch: int = 10, batches: int = 2, empty: tuple[int, int] | None = (0, 3)) -> Path:
    """``<root>/lra_release/lra_release/pathfinder<R>/<difficulty>/{imgs/<k>/sample_<i>.png, metadata/<k>.npy}``.

    Metadata as text lines (as released), 11 fields; images 8-bit grayscale; ``empty`` = (batch, index)
    of a zero-byte PNG like the release's sample_172.png.
    """
    from PIL import Image

    rng = np.random.default_rng(resolution)
    base = root / RELEASE / f"pathfinder{resolution}" / difficulty
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    for k in range(batches):
        (base / "imgs" / str(k)).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_batch):
            label = int(rng.integers(0, 2))
            path = base / "imgs" / str(k) / f"sample_{i}.png"
            if empty == (k, i):
                path.write_bytes(b"")
            else:
                Image.fromarray(rng.integers(0, 256, (resolution, resolution), dtype=np.uint8), mode="L").save(path)
            lines.append(f"imgs/{k} sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1")
        (base / "metadata" / f"{k}.npy").write_text("\n".join(lines) + "\n")
    return base


def write_release_tasks(root: Path) -> Path:
    """Tiny Text, Retrieval, Image, Pathfinder and Path-X data under ``root``, each in its official layout."""
    write_aclimdb(root)
    write_aan(root)
    write_cifar_batches(root)
    write_pathfinder_tree(root, per_batch=10, batches=2)
    write_pathfinder_tree(root, resolution=128, per_batch=5, batches=2, empty=None)
    return root
