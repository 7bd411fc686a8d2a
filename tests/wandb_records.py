"""Read an offline W&B run back: the records of ``run-<id>.wandb`` (LevelDB-log framing of protobufs).

File: a 7-byte header (``:W&B``, uint16 magic, uint8 version), then 32 KiB blocks of chunks, each
``crc32 (4) | length (2, LE) | type (1)`` + payload; type 1 = full record, 2/3/4 = first/middle/last
piece. A block tail shorter than a chunk header is padding.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7


def iter_records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def wait_for_exit(path: Path, timeout: float = 300.0) -> None:
    """wandb-core writes the run file on its own after ``finish()`` returns (later on a loaded machine): wait for the
    exit record before reading, so a slow disk or a busy CPU never makes a test read half a run."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(path)):
                return
        except (ValueError, OSError):  # the header itself not written yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout:.0f} s")
        time.sleep(0.2)


def read_run(run_dir: Path) -> dict[str, Any]:
    """{'run': {id, project, group, job_type, tags, name}, 'history': [dict], 'summary': dict, 'config': dict}."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    wait_for_exit(path)
    out: dict[str, Any] = {"run": {}, "history": [], "summary": {}, "config": {}}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for r in iter_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {
                "id": r.run.run_id,
                "project": r.run.project,
                "group": r.run.run_group,
                "job_type": r.run.job_type,
                "tags": list(r.run.tags),
                "name": r.run.display_name,
            }
            for item in r.run.config.update:
                out["config"][key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            for item in r.summary.update:
                out["summary"][key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in r.config.update:
                out["config"][key(item)] = json.loads(item.value_json)
    return out
