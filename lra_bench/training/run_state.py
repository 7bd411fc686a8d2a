"""What a run folder records about its run, so the same command can finish, skip or resume it.

The folder is a function of the command (``hydra.run.dir`` / ``sweep.subdir`` are built from the overrides,
see conf/hydra/default.yaml), so rerunning a command finds its own folder:

- ``result.json``: the run finished; a rerun prints it and stops (``rerun=true`` starts over), leaving
  ``skipped.txt`` so a sweep's summary can say the cell finished earlier.
- ``error.json``: the last attempt failed (message, traceback); a rerun tries again.
- ``checkpoints/``: the newest usable one of ``last.ckpt``, ``periodic.ckpt`` (and ``periodic-previous.ckpt``),
  ``preempted.ckpt`` and ``best-step*.ckpt`` is resumed from; each has a ``.sha256`` checksum beside it.
- ``wandb_id.txt``: the W&B run id, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import traceback
from hashlib import sha1
from pathlib import Path
from typing import Any

CHECKPOINT_NAMES = ("last.ckpt", "periodic.ckpt", "periodic-previous.ckpt", "preempted.ckpt")


def slug(overrides: str, max_len: int = 96) -> str:
    """A folder name for an override string: readable, filesystem-safe, unique (hashed when long)."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", overrides.replace("/", "-")).strip("_") or "default"
    if len(text) > max_len:
        text = text[: max_len - 9] + "-" + sha1(overrides.encode()).hexdigest()[:8]
    return text


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The finished run's result, or None when ``result.json`` is absent or is not a run's result (truncated, a JSON
    value other than an object with its task and model): such a run is not finished, it resumes and rewrites it."""
    path = Path(run_dir) / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or not {"task", "model"} <= result.keys():
        logging.getLogger(__name__).warning("%s is not a run's result (a JSON object with its task and model): the run "
                                            "is taken as unfinished and resumes", path)
        return None
    return result


def checkpoint_step(path: Path) -> int:
    """The optimizer step a checkpoint was saved at; -1 when it fails its checks (``inspect_checkpoint``)."""
    from lra_bench.training.checkpoint_io import UnusableCheckpoint, inspect_checkpoint

    try:
        return inspect_checkpoint(path)["global_step"]
    except UnusableCheckpoint:
        return -1


def resume_checkpoint(run_dir: Path, skipped: dict | None = None, expected_shapes: dict | None = None,
                      before_step: int | None = None) -> tuple[Path, int] | None:
    """The usable checkpoint furthest into training and the step saved in it, or None.

    Candidates: ``last``, ``periodic`` (and the one before it), ``preempted`` and the best-validation checkpoints
    (``best-step*.ckpt``): the run never starts over while any of them passes its checks (checksum, a readable
    checkpoint, and with ``expected_shapes`` the model's tensor shapes: ``checkpoint_io.inspect_checkpoint``).
    Chosen by the step saved inside, not by file time (after a SIGTERM, Lightning's epoch-end hooks write last.ckpt
    after preempted.ckpt at the same step); ties go to preempted, then last (it holds the validation results), then
    periodic, then best. ``before_step``: only checkpoints saved before that step. ``skipped``, when given, collects
    each checkpoint that fails its checks with the reason (``UnusableCheckpoint``; ``WrongModel`` for another
    model's)."""
    from lra_bench.training.checkpoint_io import UnusableCheckpoint, inspect_checkpoint

    folder = Path(run_dir) / "checkpoints"
    found = [folder / n for n in CHECKPOINT_NAMES if (folder / n).is_file()]
    found += sorted(folder.glob("best-*.ckpt")) if folder.is_dir() else []
    rank = {"preempted.ckpt": 4, "last.ckpt": 3, "periodic.ckpt": 2, "periodic-previous.ckpt": 1}
    steps: dict[Path, int] = {}
    for p in found:
        try:
            steps[p] = inspect_checkpoint(p, expected_shapes)["global_step"]
        except UnusableCheckpoint as e:
            if skipped is not None:
                skipped[p] = e
    valid = [p for p in steps if before_step is None or steps[p] < before_step]
    if not valid:
        return None
    best = max(valid, key=lambda p: (steps[p], rank.get(p.name, 0)))
    return best, steps[best]


def set_unusable_aside(paths: list[Path]) -> Path | None:
    """Move checkpoints that failed their checks (and their checksums) into ``checkpoints/unusable/``: kept to look
    at, out of the way of the names the resumed run writes (a best-step20.ckpt left in place made the new one
    best-step20-v1.ckpt)."""
    from lra_bench.training.checkpoint_io import checksum_path

    if not paths:
        return None
    target = Path(paths[0]).parent / "unusable"
    target.mkdir(exist_ok=True)
    for p in paths:
        for f in (p, checksum_path(p)):
            if f.exists():
                os.replace(f, target / f.name)
    return target


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
    names = ["result.json", "result-cut-by-max_time.json", "error.json", "checkpoints", "wandb_id.txt", "csv",
             "data_identity.json", "pretrain"]  # pretrain/: stage 1 of a pretrain=spt run (lra_bench/pretraining)
    present = [run_dir / n for n in names if (run_dir / n).exists()]
    if not present:
        return None
    stamp = time.strftime("previous-%Y%m%d-%H%M%S")
    target, n = run_dir / stamp, 1
    while target.exists():  # two reruns within one second keep both attempts apart
        target, n = run_dir / f"{stamp}-{n}", n + 1
    target.mkdir(parents=True)
    for p in present:
        shutil.move(str(p), target / p.name)
    return target


def set_aside_once_per_job(run_dir: Path) -> tuple[Path | None, str | None]:
    """``rerun=true`` inside a scheduler job: SLURM requeues a job (preemption, ``max_num_timeout``) by running the
    same command again, ``rerun=true`` included, under the same ``SLURM_JOB_ID`` and a higher
    ``SLURM_RESTART_COUNT``. Only the job's first attempt sets the previous progress aside; it records the job in
    ``<run>/rerun_job.txt``, and a requeued attempt resumes what the first started. Another command in the same
    allocation (same job id and restart count: an ``salloc`` shell, a script running two commands) is a new rerun
    and starts over again. ``LRA_JOB_ID`` names the attempt's job for other schedulers (every attempt of it
    resumes); with neither, every command is a new job. Returns (where the progress went, or None; the job id when
    this is a requeued attempt)."""
    run_dir = Path(run_dir)
    job = os.environ.get("LRA_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    attempt = "" if os.environ.get("LRA_JOB_ID") or not job else os.environ.get("SLURM_RESTART_COUNT", "0")
    marker = run_dir / "rerun_job.txt"
    try:
        recorded_job, _, recorded_attempt = marker.read_text().strip().partition(" ")
    except OSError:
        recorded_job, recorded_attempt = "", ""
    requeued = bool(job) and recorded_job == job and (not attempt or attempt != recorded_attempt)
    moved = None if requeued else set_aside(run_dir)
    if job:  # this attempt is recorded, so a second command inside it starts over again
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{job} {attempt}".strip() + "\n")
    return moved, job if requeued else None


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
