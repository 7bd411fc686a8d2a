"""Find a task's folder under the one data root.

The LRA tarball nests its members as ``lra_release/lra_release/<task>``; unpacked into a folder
named ``lra_release`` that is three levels. Users may also point the root straight at the task
folder, or keep generated data beside the release. We search the root and up to ``max_depth``
levels below it, shallowest first, in sorted order, so the choice is deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lra_bench.errors import DataError

log = logging.getLogger(__name__)

SKIP_DIRS = {"cache", "wandb", "__pycache__"}


def find_dataset_dir(
    root: str | Path,
    dirname: str,
    required: Sequence[str],
    fill_hint: str,
    max_depth: int = 3,
) -> Path:
    """Return the shallowest folder named ``dirname`` (or ``root`` itself) holding every ``required`` file.

    Raises ``DataError`` naming the expected path and ``fill_hint`` (the command that fills it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist. Set paths.data_dir=<folder> (or LRA_DATA_DIR) to where the data lies, "
            f"or fill it: {fill_hint}"
        )

    def complete(folder: Path) -> bool:
        return all((folder / name).is_file() for name in required)

    if root.name == dirname and complete(root):
        return root
    level = [root]
    for _ in range(max_depth + 1):
        next_level: list[Path] = []
        for folder in level:
            candidate = folder / dirname
            if candidate.is_dir() and complete(candidate):
                return candidate
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            next_level.extend(p for p in children if not p.name.startswith(".") and p.name not in SKIP_DIRS)
        level = next_level
    partial = next((p for p in root.rglob(dirname) if p.is_dir()), None)
    missing = ""
    if partial is not None:
        lacking = [name for name in required if not (partial / name).is_file()]
        missing = f" Found {partial}, but it lacks {', '.join(lacking)}."
    raise DataError(
        f"no {dirname}/ with {', '.join(required)} within {max_depth} levels below {root}.{missing} "
        f"Fill it with: {fill_hint}"
    )
