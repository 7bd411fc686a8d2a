"""What a run folder records about its run, so the same command can finish, skip or resume it.

The folder is a function of the command (``hydra.run.dir`` / ``sweep.subdir`` are built from the overrides,
see conf/hydra/default.yaml), so rerunning a command finds its own folder:

- ``result.json``: the run finished; a rerun prints it and stops (``rerun=true`` starts over), leaving
  ``skipped.txt`` so a sweep's summary can say the cell finished earlier.
- ``error.json``: the last attempt failed (message, traceback); a rerun tries again.
- ``checkpoints/``: the newest of ``last.ckpt``, ``periodic.ckpt`` and ``preempted.ckpt`` is resumed from.
- ``wandb_id.txt``: the W&B run id, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import traceback
from hashlib import sha1
from pathlib import Path
from typing import Any

CHECKPOINT_NAMES = ("last.ckpt", "periodic.ckpt", "preempted.ckpt")


def slug(overrides: str, max_len: int = 96) -> str:
    """A folder name for an override string: readable, filesystem-safe, unique (hashed when long)."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", overrides.replace("/", "-")).strip("_") or "default"
    if len(text) > max_len:
        text = text[: max_len - 9] + "-" + sha1(overrides.encode()).hexdigest()[:8]
    return text


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "result.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at (memory-mapped: nothing but the header is read); -1 when the
    file cannot be read as a checkpoint (truncated, 0 bytes, not a checkpoint)."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False).get("global_step", -1))
    except Exception:  # a truncated checkpoint (killed while writing) is never resumed from
        return -1


def resume_checkpoint(run_dir: Path, report: list[str] | None = None) -> tuple[Path, int] | None:
    """The valid checkpoint furthest into training and the step saved in it, or None.

    Candidates: ``last``, ``periodic``, ``preempted`` and the best-validation checkpoints (``best-step*.ckpt``):
    the run never starts over while any of them can be read. Chosen by the step saved inside, not by file time
    (after a SIGTERM, Lightning's epoch-end hooks write last.ckpt after preempted.ckpt at the same step); ties go to
    preempted, then last (it holds the validation results), then periodic, then best. ``report``, when given,
    collects one line per unreadable checkpoint (skipped, with the reason)."""
    folder = Path(run_dir) / "checkpoints"
    found = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
    found += sorted(folder.glob("best-*.ckpt")) if folder.is_dir() else []
    rank = {"preempted.ckpt": 3, "last.ckpt": 2, "periodic.ckpt": 1}
    steps = {p: checkpoint_step(p) for p in found}
    for p, step in steps.items():
        if step < 0 and report is not None:
            size = p.stat().st_size
            report.append(f"skipping {p} ({'0 bytes' if size == 0 else f'{size:,} bytes'}, not a readable checkpoint)")
    valid = [p for p in found if steps[p] >= 0]
    if not valid:
        return None
    best = max(valid, key=lambda p: (steps[p], rank.get(p.name, 0)))
    return best, steps[best]


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of checkpoint or error writes interrupted by a kill (``.<name>.tmp-<pid>``)."""
    folder = Path(run_dir)
    for tmp in [*folder.glob(".*.tmp-*"), *(folder / "checkpoints").glob(".*.tmp-*")]:
        tmp.unlink(missing_ok=True)


def wandb_id(run_dir: Path) -> str:
    """The run's W&B id, created on first use and kept in the run folder."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    import secrets
    import string

    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's id format
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def record_error(run_dir: Path, error: BaseException) -> Path | None:
    """``error.json`` (message, traceback), written atomically; None when the folder cannot be written (a full
    disk: the error itself is then the one line the user sees), never a 0-byte file."""
    from lra_bench.training.checkpoint_io import atomic_write

    path = Path(run_dir) / "error.json"
    text = json.dumps({
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=2)
    try:
        atomic_write(path, lambda f: f.write(text.encode()))
    except Exception:  # no space or no permission: nothing half-written is left behind
        return None
    return path


def clear_error(run_dir: Path) -> None:
    (Path(run_dir) / "error.json").unlink(missing_ok=True)


def set_aside(run_dir: Path) -> Path | None:
    """``rerun=true``: move the previous attempt's results, checkpoints and W&B id into ``previous-<time>/``."""
    run_dir = Path(run_dir)
    names = ["result.json", "error.json", "checkpoints", "wandb_id.txt", "csv", "data_identity.json"]
    present = [run_dir / n for n in names if (run_dir / n).exists()]
    if not present:
        return None
    target = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for p in present:
        shutil.move(str(p), target / p.name)
    return target


def set_aside_once_per_job(run_dir: Path) -> tuple[Path | None, str | None]:
    """``rerun=true`` inside a scheduler job: SLURM requeues a job (preemption, ``max_num_timeout``) by running the
    same command again, ``rerun=true`` included, under the same ``SLURM_JOB_ID``. Only the job's first attempt sets
    the previous progress aside; it records its job id in ``<run>/rerun_job.txt``, and a later attempt of the same
    job resumes what the first started. ``LRA_JOB_ID`` names the job for other schedulers; with neither, every
    command is a new job. Returns (where the progress went, or None; the job id when this is a requeued attempt)."""
    run_dir = Path(run_dir)
    job = os.environ.get("LRA_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    marker = run_dir / "rerun_job.txt"
    try:
        same_job = bool(job) and marker.read_text().strip() == job
    except OSError:
        same_job = False
    if same_job:
        return None, job
    moved = set_aside(run_dir)
    if job:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(job + "\n")
    return moved, None


def truncate_metrics(csv_path: Path, before_step: int) -> int:
    """Drop the rows a killed attempt logged at or after ``before_step`` (the step the resumed checkpoint holds):
    the resumed run logs those steps again, so the CSV ends as an uninterrupted run's. Returns the rows dropped."""
    import csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        return 0
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    kept = [r for r in rows if not (r.get("step") or "").strip() or int(float(r["step"])) < before_step]
    if len(kept) == len(rows):
        return 0
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, csv_path)
    return len(rows) - len(kept)
