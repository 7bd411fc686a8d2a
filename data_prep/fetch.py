"""Download the LRA data that cannot be generated, or print the manual steps when there is no network.

    python -m data_prep.fetch --task text|image|retrieval --data-dir DIR

- text: the Stanford IMDB archive, unpacked to ``DIR/aclImdb`` (the Text DataModule also reads the hub's
  ``stanfordnlp/imdb`` directly when a network exists).
- image: the CIFAR-10 python archive, unpacked to ``DIR/cifar-10-batches-py``.
- retrieval: the three AAN TSVs (10.6 GB) from the hub dataset ``OpenNLPLab/lra`` into ``DIR/tsv_data``;
  the full LRA release (``lra_release.gz``, several GB, also ListOps and Pathfinder) is the alternative.
ListOps, Pathfinder and Path-X are generated instead (``data_prep.listops``, ``data_prep.pathfinder``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

SOURCES = {
    "text": ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", "aclImdb"),
    "image": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py"),
}
AAN_REPO, AAN_FILES = "OpenNLPLab/lra", [f"data/aan/new_aan_pairs.{s}.tsv" for s in ("train", "eval", "test")]
RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or url
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def manual_steps(task: str, data_dir: Path) -> str:
    if task in SOURCES:
        url, folder = SOURCES[task]
        return (f"On a machine with a network: download {url}, then `tar xzf {Path(url).name} -C {data_dir}` "
                f"so that {data_dir / folder}/ exists.")
    return (f"On a machine with a network: fetch {', '.join(AAN_FILES)} from the hub dataset {AAN_REPO} "
            f"(`huggingface-cli download {AAN_REPO} --repo-type dataset --include 'data/aan/*'`) into {data_dir / 'tsv_data'}/, "
            f"or download {RELEASE_URL} and `tar xf lra_release.gz -C {data_dir}`.")


def fetch_archive(task: str, data_dir: Path) -> Path:
    url, folder = SOURCES[task]
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        archive = Path(tmp) / Path(url).name
        print(f"downloading {url}", flush=True)
        with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / folder), data_dir / folder)
    return data_dir / folder


def fetch_aan(data_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download

    target = data_dir / "tsv_data"
    target.mkdir(parents=True, exist_ok=True)
    for name in AAN_FILES:
        path = hf_hub_download(AAN_REPO, name, repo_type="dataset", cache_dir=str(data_dir / "hf"))
        shutil.copyfile(path, target / Path(name).name)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.fetch", description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=["text", "image", "retrieval"])
    p.add_argument("--data-dir", required=True)
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir).expanduser().resolve()
    url = SOURCES[args.task][0] if args.task in SOURCES else "https://huggingface.co"
    done = data_dir / (SOURCES[args.task][1] if args.task in SOURCES else "tsv_data")
    if done.exists():
        print(f"{done} already exists")
        return 0
    if not reachable(url):
        print(f"no network to {urlparse(url).hostname}. {manual_steps(args.task, data_dir)}", file=sys.stderr)
        return 2
    try:
        path = fetch_archive(args.task, data_dir) if args.task in SOURCES else fetch_aan(data_dir)
    except Exception as e:  # a download can fail in many ways; the user needs the cause and the manual route
        print(f"fetching {args.task} failed: {e}. {manual_steps(args.task, data_dir)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
