"""Where non-generated data comes from: a local release folder first, then the Hugging Face hub.

A hub id may also name a local folder in the hub repository's layout (``plain_text/*.parquet``), which
``datasets.load_dataset`` reads the same way offline; the tests use that. Without a network, asking for
a hub id fails at once with the manual steps instead of waiting on timeouts.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from lra_bench.errors import DataError


# said with every failed download: the tasks a machine without a network can run at once
NO_DOWNLOAD_TASKS = ("ListOps, Pathfinder and Path-X need no download (generated here: `make lra-task TASK=listops`, "
                     "`make data TASK=pathfinder`)")


def network_available(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_hub_dataset(hf_path: str, cache_dir: Path, manual_steps: str) -> Any:
    """``datasets.load_dataset(hf_path)`` (a hub id or a local folder) or a DataError with ``manual_steps``."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(hf_path).expanduser()
    if local.is_dir():
        try:
            return datasets.load_dataset(str(local), cache_dir=str(cache_dir))
        except Exception as e:  # datasets raises many types; the user needs the folder and the cause
            raise DataError(f"could not read the dataset folder {local}: {e}. {manual_steps}") from e
    if not network_available():
        raise DataError(f"no network to fetch {hf_path} from the Hugging Face hub. {manual_steps}. {NO_DOWNLOAD_TASKS}")
    try:
        return datasets.load_dataset(hf_path, cache_dir=str(cache_dir))
    except Exception as e:
        raise DataError(f"downloading {hf_path} from the Hugging Face hub failed: {e}. {manual_steps}. "
                        f"{NO_DOWNLOAD_TASKS}") from e
