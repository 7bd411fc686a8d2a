"""What a resumed run takes from its checkpoint and what from the command, when the two differ.

Every checkpoint records the config of the run that wrote it (``hyper_parameters["run_config"]``). On resuming,
each setting that differs from the command falls under one rule, and the start-up log says them all in one line:

- **applies** from the resumed step: ``optimizer.*`` (lr, weight decay, betas, eps: the schedule keeps its shape and
  is rescaled to the new peak, lr(t) = new lr x factor(t); Adam's moments are kept), ``scheduler.*`` and the
  schedule's length (``trainer.max_steps``, ``trainer.max_epochs``: the schedule is rebuilt from the new settings and
  read at the resumed step), and every other training setting (validation and checkpoint intervals, clipping,
  precision, ``on_nonfinite``, ...): they are read from the command, as in any run.
- **refused**, the run stops with one line naming the keys: what the checkpoint's weights and data position mean
  (``model.*``, ``task.*`` but its loader workers, ``seed``, ``trainer.accumulate_grad_batches``, and ``pretrain``:
  a from-scratch checkpoint resumed under ``pretrain=spt`` would be reported as self-pretrained, and the reverse). Start over
  (``rerun=true``) or train a new run from these weights elsewhere.
- **not compared**: where things go and how they are shown (``paths.*``, ``logger.*``, ``callbacks.*``, ``note``,
  ``run_name``, ``sweep_name``, ``rerun``, ``ckpt_path``, ``train``, ``test``, ``task.datamodule.num_workers``; the data's location,
  ``task.datamodule.data_dir``/``cache_dir``: its content is checked by ``data_identity``).
"""

from __future__ import annotations

from typing import Any

from lra_bench.errors import ConfigError

REFUSED = ("model.", "task.", "seed", "trainer.accumulate_grad_batches", "pretrain")
NOT_COMPARED = ("paths.", "logger.", "callbacks.", "hydra.", "note", "run_name", "sweep_name", "rerun", "ckpt_path", "train",
                "test", "task.datamodule.num_workers", "optimized_metric",
                # where the data lies: what it is, is the run's data identity (training/data_identity.py, by content)
                "task.datamodule.data_dir", "task.datamodule.cache_dir")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return out


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) or key.startswith(p + ".") for p in prefixes)


def differences(saved: dict[str, Any], command: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key: (checkpoint's value, command's value)`` for every compared key that differs."""
    a, b = flatten(saved), flatten(command)
    keys = sorted(k for k in set(a) | set(b) if not _matches(k, NOT_COMPARED))
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def refused_differences(saved: dict[str, Any], command: dict[str, Any]) -> str:
    """The differences that change what saved weights mean (``REFUSED`` keys), as one phrase; "" when none."""
    return _refused(differences(saved, command))


def _refused(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} now)" for k, (a, b) in diff.items() if _matches(k, REFUSED))


def resume_rule_line(ckpt: str, step: int, saved: dict[str, Any] | None, command: dict[str, Any]) -> str:
    """The start-up line for a resume from ``ckpt``; raises ConfigError naming the keys that cannot apply."""
    if saved is None:
        return (f"resume settings: {ckpt} records no run config (written by an older lra_bench): the command's settings "
                f"apply from step {step}, unchecked")
    diff = differences(saved, command)
    listed = _refused(diff)
    if listed:
        raise ConfigError(f"cannot resume {ckpt} with other {listed}: they define what its weights and data position "
                          "mean. Use the checkpoint's values, or start over with rerun=true")
    if not diff:
        return f"resume settings: the command matches {ckpt}'s config; weights, optimizer state, data position and RNG from step {step}"
    changed = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
    lr_note = (" (the lr schedule keeps its shape, rescaled to the new peak)"
               if any(k.startswith("optimizer.") for k in diff) else "")
    return (f"resume settings: weights, optimizer moments, data position and RNG from {ckpt} (step {step}); from the "
            f"command, applied from step {step}{lr_note}: {changed}")
