"""Train one model on one LRA task: ``python -m lra_bench.train [experiment=lra/<model>-<task>] [overrides]``.

Compose the config, instantiate data, model, callbacks, loggers and trainer, ``fit``, then ``test`` the
best-validation checkpoint; print a summary table, write ``result.json`` in the run folder and
return the metric a sweeper optimises (``val/acc_best``). W&B is closed after every job, failed
ones too, so the jobs of a multirun never share a run.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.training.callbacks import SpeedMonitor, count_parameters
from lra_bench.config import CONFIG_PATH, check_multirun_ddp, check_names, exit_on_lra_error, hydra_runtime, is_multirun, resolve_vocab_size
from lra_bench.training.diagnosis import ChanceDiagnosis
from lra_bench.training.fault_points import FAULT_ENV, FaultPoints, fault_point
from lra_bench.training.faults import NonFiniteGuard, Preempted
from lra_bench.training.loggers import finish_wandb
from lra_bench.training.module import LRAModule
from lra_bench.training.options import check_options
from lra_bench.errors import ConfigError, RunStorageError
from lra_bench.training import data_identity, stopping
from lra_bench.target_errors import target_error
from lra_bench.training.checkpoint_io import (UnusableCheckpoint, WrongModel, atomic_write, check_fits, checksum_path,
                                              inspect_checkpoint, listed_digests, model_shapes)
from lra_bench.training.resume_rules import resume_rule_line
from lra_bench.training.compile import compile_backbone
from lra_bench.training.run_lock import RunLock
from lra_bench.training.run_state import (clear_error, finished_result, record_error, remove_stale_temp_files,
                                          resume_checkpoint, set_aside, set_aside_once_per_job, set_unusable_aside,
                                          truncate_metrics, wandb_id)
from lra_bench.training.summary import print_summary
from lra_bench.pretraining import stages

log = logging.getLogger("lra_bench.train")


def quiet_library_noise() -> None:
    """Drop start-up chatter that says nothing about the run (Lightning's litlogger advert, pytree deprecations)."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Mid-epoch resume is exact here: ResumableRandomSampler + the ResumeState callback skip the consumed batches.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    # SPT's stage 1 has no validation loader by design (it reads the training inputs only)
    warnings.filterwarnings("ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*")


def pin_threads(cfg: DictConfig) -> None:
    """``torch_threads``: a fixed intra-op thread count, so a run's float reductions do not depend on how many cores
    the machine has (the quick default pins 2: its README figures hold on any machine with the same torch build)."""
    threads = cfg.get("torch_threads")
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"torch_threads={threads!r}: must be null (torch's default) or an integer >= 1")
    import torch

    torch.set_num_threads(threads)
    log.info("torch intra-op threads: %d (torch_threads)", threads)


def build(cfg: DictConfig, pretraining: bool = False) -> tuple[pl.LightningDataModule, LRAModule, pl.Trainer]:
    """Instantiate the datamodule, the LightningModule and the trainer (with callbacks and loggers).

    ``pretraining``: stage 1 of ``pretrain=spt`` (``lra_bench/pretraining``): the classifier inside a ``Denoiser``,
    trained on the training split's inputs only (``PretrainData``)."""
    check_names(cfg)
    check_options(cfg)
    datamodule = instantiate(cfg.task.datamodule)
    resolve_vocab_size(cfg, datamodule)
    try:
        net = instantiate(cfg.model.net)
    except Exception as e:
        unloadable = target_error(e)
        if unloadable is None:
            raise
        raise ConfigError(f"model {cfg.model.name}: {unloadable}") from e
    if cfg.get("compile"):
        compile_backbone(net.backbone, cfg.compile)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    if pretraining:
        from lra_bench.pretraining.data import PretrainData
        from lra_bench.pretraining.module import PretrainModule
        from lra_bench.pretraining.objectives import Denoiser, resolve_objective

        objective = resolve_objective(cfg.pretrain.objective, net.backbone, net.d_model)
        log.info("stage 1 of 2: self-pretraining (%s objective, mask rate %s) on the training inputs", objective,
                 cfg.pretrain.mask_rate if objective == "masked" else "-")
        module = PretrainModule(Denoiser(net, objective, float(cfg.pretrain.mask_rate)), optimizer, scheduler,
                                run_config(cfg))
        datamodule = PretrainData(datamodule, cfg.pretrain.get("batch_size"))
    else:
        module = LRAModule(net, num_classes=cfg.task.num_classes, optimizer=optimizer, scheduler=scheduler,
                           run_config=run_config(cfg))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    if not loggers:  # logger=none: Lightning's LearningRateMonitor refuses a trainer without a logger
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if os.environ.get(FAULT_ENV):  # a test kills the run at a named phase
        callbacks.append(FaultPoints())
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's resolved config as logged, and as every checkpoint records it (``hyper_parameters["run_config"]``)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


SUMMARY_METRICS = {"val/acc": "max", "val/acc_best": "max", "val/loss": "min", "test/acc": "last", "test/loss": "last",
                   "train/tokens_per_sec": "mean", "train/samples_per_sec": "mean", "train/peak_memory_mb": "max"}


def define_summary_metrics(logger: Any) -> None:
    """W&B: what each metric's run summary holds (best val accuracy, test at the best checkpoint, mean speed...)."""
    experiment = getattr(logger, "experiment", None) if type(logger).__name__.endswith("WandbLogger") else None
    if experiment is None or not hasattr(experiment, "define_metric"):
        return
    try:
        for name, summary in SUMMARY_METRICS.items():
            experiment.define_metric(name, summary=summary)
    except Exception as e:  # W&B trouble never stops training
        log.warning("W&B define_metric failed: %s", e)


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """Which preset and overrides produced the run (the report tells paper-preset runs from reduced ones)."""
    hc = hydra_runtime()
    if hc is None:
        return {"experiment": None, "overrides": [], "sweep": None}
    return {"experiment": hc.runtime.choices.get("experiment"), "overrides": list(hc.overrides.task),
            "sweep": cfg.get("sweep_name") if is_multirun() else None}


def _metric(metrics: dict[str, Any], key: str) -> float:
    v = metrics.get(key)
    return float(v) if v is not None else float("nan")


def run(cfg: DictConfig, earlier_attempt: bool = False, pretraining: bool = False) -> dict[str, Any]:
    """Fit (resuming from the run folder's newest usable checkpoint, or ``ckpt_path``) and test as configured; return
    the run's results (also written to ``result.json``).

    If training was preempted (SIGTERM/SIGINT), returns ``{"preempted": signal}`` without testing. ``earlier_attempt``:
    an earlier attempt of this run logged to W&B (its id is in the run folder). ``pretraining``: stage 1 of
    ``pretrain=spt``, which ends by writing the pretrained encoder; stage 2 (a ``pretrain`` run otherwise) starts
    from it unless it resumes a checkpoint of its own."""
    started = time.time()
    quiet_library_noise()
    if cfg.get("note"):
        log.info("%s", cfg.note)
    pin_threads(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module, trainer = build(cfg, pretraining)
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_point(cfg, out_dir, module, trainer.loggers, earlier_attempt) if cfg.train else None
    task_data = getattr(datamodule, "task_data", datamodule)
    data_identity.check(out_dir, task_data, continuing=ckpt_path is not None)
    if cfg.get("pretrain") and not pretraining and cfg.train and ckpt_path is None:
        stages.start_from_encoder(module.net, out_dir / stages.STAGE_DIR / stages.ENCODER, module.hparams.run_config)
    for logger in trainer.loggers:
        logger.log_hyperparams(module.hparams.run_config)
        define_summary_metrics(logger)

    if cfg.train:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except Preempted as stop:  # the checkpoint is saved; rerunning the same command resumes
            return {"preempted": int(stop.signum)}
    fault_point("after_fit", trainer.global_step)
    tokens_seen = module.tokens_seen_total()  # before the test step, whose best checkpoint restores its older count
    if pretraining:
        return finish_pretraining(cfg, module, trainer, out_dir, started)

    test_metrics: dict[str, Any] = {}
    ckpt = trainer.checkpoint_callback
    tested = ""
    if cfg.test:
        tested = checked_best_checkpoint(ckpt.best_model_path if ckpt is not None else "", module)
        results = trainer.test(module, datamodule=datamodule, ckpt_path=tested or None, verbose=False)
        test_metrics = results[0] if results else {}

    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
    perf = speed.summary() if speed else {}
    # the running maximum as fitting left it, or as the resumed checkpoint holds it when a rerun had nothing left to fit
    best_val = float(module.val_acc_best.max_value)
    result: dict[str, Any] = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "run_name": cfg.run_name,
        "seed": cfg.seed,
        "lra_code": bool(cfg.get("lra_code", False)),  # LRA's released code (true) or the papers' mechanisms
        "protocol": stages.protocol(cfg),  # scratch (LRA's) or spt (self-pretrained first): never pooled
        **run_identity(cfg),
        "val/acc_best": best_val if math.isfinite(best_val) else float("nan"),
        "test/acc": _metric(test_metrics, "test/acc"),
        "test/loss": _metric(test_metrics, "test/loss"),
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else "",
        "tested_weights": ("best_checkpoint" if tested else "final") if cfg.test else "not_tested",
        "global_step": trainer.global_step,
        "train/tokens_seen": tokens_seen,
        **stopping.stop_reason(trainer, fitted=bool(cfg.train)),
        "wall_time_s": time.time() - started,
        **{f"perf/{k}": v for k, v in perf.items()},
        **{f"model/{k}": v for k, v in count_parameters(module.net).items()},
    }
    if cfg.get("pretrain"):
        result |= stages.budget(out_dir, result)
    stats = getattr(getattr(datamodule, "cache", None), "meta", lambda: {})().get("stats", {})
    val_counts = stats.get("val", {}).get("label_counts")
    if val_counts:
        result["data/val_majority_rate"] = max(val_counts) / sum(val_counts)
    diagnosis = next((c for c in trainer.callbacks if isinstance(c, ChanceDiagnosis)), None)
    if diagnosis is not None:  # "did it learn?": at_chance | learning | not_checked, with its figures
        result |= diagnosis.result()
    guard = next((c for c in trainer.callbacks if isinstance(c, NonFiniteGuard)), None)
    if guard is not None and guard.skipped:
        result["train/nonfinite_skipped"] = guard.skipped

    out_dir.mkdir(parents=True, exist_ok=True)
    write_result(out_dir, result, trainer.global_step)
    summarise_in_wandb(trainer, result)
    print_summary(result, out_dir)
    return result


def finish_pretraining(cfg: DictConfig, module: Any, trainer: pl.Trainer, out_dir: Path, started: float) -> dict[str, Any]:
    """Stage 1's end: the pretrained encoder, then its ``result.json`` (the mark that stage 1 is done)."""
    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
    result: dict[str, Any] = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "run_name": cfg.run_name,
        "seed": cfg.seed,
        "stage": "pretrain",
        "protocol": stages.PROTOCOL_SPT,
        "pretrain": cfg.pretrain.name,
        "objective": module.net.objective,
        "mask_rate": module.net.mask_rate if module.net.objective == "masked" else None,
        **run_identity(cfg),
        "pretrain/loss": module.final_loss(),  # kept in checkpoints: a rerun with no step left still has it
        "global_step": trainer.global_step,
        "train/tokens_seen": module.tokens_seen_total(),
        **stopping.stop_reason(trainer, fitted=True),
        "wall_time_s": time.time() - started,
        **{f"perf/{k}": v for k, v in (speed.summary() if speed else {}).items()},
    }
    meta = {k: result[k] for k in ("task", "model", "seed", "objective", "mask_rate", "global_step")}
    meta["run_config"] = module.hparams.run_config  # stage 2 checks it ran the same model, task, seed and recipe
    stages.save_encoder(out_dir / stages.ENCODER, module.net.encoder_state(), meta)
    write_result(out_dir, result, trainer.global_step)  # the encoder is in place before stage 1 is marked done
    summarise_in_wandb(trainer, result)
    print_summary(result, out_dir)
    return result


def write_result(out_dir: Path, result: dict[str, Any], step: int) -> None:
    """``result.json``, the mark that a run (or stage 1) finished: written whole or not at all."""
    text = json.dumps(result, indent=2, default=str).encode()

    def write(f) -> None:
        f.write(text)
        fault_point("result_write", step)

    atomic_write(out_dir / "result.json", write)


def summarise_in_wandb(trainer: pl.Trainer, result: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "summary"):  # W&B: test metrics of the best checkpoint as the run summary
            try:
                experiment.summary.update({k: v for k, v in result.items() if isinstance(v, (int, float)) and not math.isnan(v)})
            except Exception as e:  # W&B trouble never costs the run its results
                log.warning("W&B summary update failed: %s", e)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run in the run folder's state: skip a finished run, resume an interrupted one, record failures.

    The folder is locked for the whole run (one writer: a second identical command refuses, naming the first).
    W&B is finished (with the right exit code) whatever happens, so jobs never share a run."""
    out_dir = Path(cfg.paths.output_dir)
    try:
        lock = RunLock(out_dir).acquire()
    except OSError as e:  # RunFolderBusy (another writer) is not an OSError: it passes through as it is
        raise RunStorageError(f"cannot write the run folder {out_dir}: {e.strerror or e}; set paths.log_dir=<a writable "
                              "folder> (or fix the folder's permissions)") from e
    try:
        return _train_in(cfg, out_dir)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise RunStorageError(f"cannot write in {out_dir}: {os.strerror(e.errno)}. Free space and rerun the same "
                                  "command: it resumes from the newest complete checkpoint") from e
        raise
    finally:
        lock.release()


def _train_in(cfg: DictConfig, out_dir: Path, pretraining: bool = False) -> dict[str, Any]:
    """The run folder's state machine (finished, cut by its time limit, interrupted, new). A ``pretrain`` run goes
    through it twice: stage 1 in ``<run>/pretrain`` (``pretraining``), then stage 2 in ``<run>``."""
    if cfg.get("rerun"):
        moved, requeued = set_aside_once_per_job(out_dir)
        if moved:
            log.info("rerun=true: the previous attempt is in %s", moved)
        if requeued:
            log.info("rerun=true: job %s already started this run over; this requeued attempt resumes it", requeued)
    done = finished_result(out_dir)
    if done is not None and cfg.train:
        data_identity.check_finished(out_dir, cfg.task.datamodule)
    if done is not None and cfg.train and stopping.continues_after_time_limit(done, cfg.trainer.get("max_time")):
        log.info("%s was cut by its time limit (trainer.max_time, %.0f s) at step %s: it goes on with trainer.max_time=%s",
                 out_dir, done.get("max_time_s", 0), done.get("global_step"), cfg.trainer.get("max_time"))
        periodic = stopping.time_cut_resume_point(out_dir)
        if periodic is None:
            log.info("no periodic checkpoint to go on from exactly: starting over (the cut run is in %s)", set_aside(out_dir))
        else:
            # from here it is an interrupted run like any other (a kill resumes it); the cut result is kept beside
            os.replace(out_dir / "result.json", out_dir / "result-cut-by-max_time.json")
            if not cfg.get("ckpt_path"):
                with open_dict(cfg):
                    cfg.ckpt_path = str(periodic)
    elif done is not None and cfg.train:
        log.info("%s already finished (result.json); rerun=true starts it over", out_dir)
        (out_dir / "skipped.txt").write_text(f"skipped at {time.strftime('%Y-%m-%d %H:%M:%S')}: already finished\n")
        print_summary(done, out_dir)
        return done | {"skipped_rerun": True}
    (out_dir / "skipped.txt").unlink(missing_ok=True)
    remove_stale_temp_files(out_dir)
    if cfg.get("pretrain") and not pretraining:
        stage_two = stages.stage_two_config(cfg)  # its W&B run in stage 1's group, its share of a budget_fraction
        stage_one = finished_result(out_dir / stages.STAGE_DIR)
        if stage_one is not None and stages.stage_two_started(out_dir):
            log.info("stage 1 is settled (stage 2 started from its encoder at step %s): it is not trained further",
                     stage_one.get("global_step"))
        elif cfg.train:
            if cfg.get("ckpt_path") and stage_one is None:
                raise ConfigError(
                    f"ckpt_path={cfg.ckpt_path} with pretrain={cfg.pretrain.get('name')}: stage 1 has not finished in "
                    f"{out_dir}, and a given checkpoint is resumed by stage 2 only (stage 1 would train here for "
                    "nothing, its budget counted for weights it did not make); rerun without ckpt_path (a killed run "
                    "resumes either stage by itself), or run in the folder whose stage 1 finished")
            try:  # stage 1 runs (or resumes, or is found finished) in <run>/pretrain before stage 2 starts
                first = _train_in(stages.stage_one_config(cfg), out_dir / stages.STAGE_DIR, pretraining=True)
            except BaseException as e:
                record_error(out_dir, e)  # the run's folder says it failed too (a sweep's summary reads it)
                raise
            if "preempted" in first:
                return first
            log.info("stage 2 of 2: %s from the self-pretrained encoder", cfg.run_name)
        cfg = stage_two
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    earlier_attempt = (out_dir / "wandb_id.txt").is_file()
    if wandb_cfg is not None and wandb_cfg.get("id") is None:
        with open_dict(cfg):
            cfg.logger.wandb.id = wandb_id(out_dir)  # a resumed run continues the same W&B run
    try:
        result = run(cfg, earlier_attempt, pretraining)
    except BaseException as e:
        record_error(out_dir, e)
        finish_wandb(exit_code=1)
        raise
    if "preempted" in result:
        finish_wandb(exit_code=128 + result["preempted"])
        return result
    clear_error(out_dir)
    finish_wandb(exit_code=0)
    return result


def checked_best_checkpoint(best: str, module: LRAModule) -> str:
    """The best-validation checkpoint the test step loads, after the checks every load passes; "" (test the final
    weights) when there is none or it fails them, said in the log."""
    if not best:
        log.warning("no best checkpoint (checkpointing off or no validation ran): testing the final weights")
        return ""
    try:
        inspect_checkpoint(Path(best), model_shapes(module))
    except UnusableCheckpoint as e:
        aside = Path(best).parent / "unusable" / Path(best).name
        reason = f"it failed its checks at start-up and was moved to {aside.parent}" if aside.is_file() else str(e)
        log.warning("the best checkpoint %s is unusable (%s): testing the final weights instead; result.json says "
                    "tested_weights=final", best, reason)
        return ""
    return best


def resume_point(cfg: DictConfig, out_dir: Path, module: LRAModule | None = None, loggers: Any = (),
                 earlier_attempt: bool = False) -> str | None:
    """The checkpoint to resume from (``ckpt_path``, else the run folder's newest usable one), said in the log with
    its step, any checkpoint skipped and why, and what the command changes (``resume_rules``); the CSV rows a killed
    attempt logged after it are dropped. With nothing to resume from, a killed attempt's rows are dropped and W&B
    gets a new run (W&B refuses steps below those it has seen, so the old run could not take the new rows)."""
    expected = model_shapes(module) if module is not None else None
    if cfg.get("ckpt_path"):
        ckpt = Path(cfg.ckpt_path)
        if not ckpt.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such file; give an existing checkpoint, or leave ckpt_path "
                              f"unset to resume from the newest in {out_dir / 'checkpoints'}")
        try:
            checkpoint = inspect_checkpoint(ckpt, require_checksum=False)
        except UnusableCheckpoint as e:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: {e}; give another checkpoint") from e
        if listed_digests(ckpt) is None:
            log.warning("ckpt_path=%s has no checksum beside it (%s): loaded unverified", ckpt, checksum_path(ckpt).name)
    else:
        skipped: dict[Path, UnusableCheckpoint] = {}
        found = resume_checkpoint(out_dir, skipped, expected_shapes=expected)
        for path, reason in skipped.items():
            log.warning("skipping %s: %s", path, reason)
        wrong_model = [p for p, reason in skipped.items() if isinstance(reason, WrongModel)]
        if found is None and wrong_model:  # the command changed the model of a run that has checkpoints: refused below
            ckpt = wrong_model[-1]
            checkpoint = inspect_checkpoint(ckpt)
        else:
            aside = set_unusable_aside(list(skipped))
            if aside is not None:
                log.info("the skipped checkpoints are in %s", aside)
            if found is None:
                start_over(out_dir, bool(skipped), loggers, earlier_attempt)
                return None
            ckpt = found[0]
            checkpoint = inspect_checkpoint(ckpt, expected)
    step = checkpoint["global_step"]
    if module is not None:  # the rules first: a changed model size is named by its keys, not by a tensor shape
        saved = (checkpoint.get("hyper_parameters") or {}).get("run_config")
        rules = resume_rule_line(str(ckpt), step, saved, module.hparams.run_config)
        try:
            check_fits(checkpoint, expected)
        except WrongModel as e:
            raise ConfigError(f"cannot resume {ckpt}: {e}. Resume it with the model it was trained with, or start over "
                              "with rerun=true") from e
        log.info("resuming from %s (step %d)", ckpt, step)
        log.info("%s", rules)
    else:
        log.info("resuming from %s (step %d)", ckpt, step)
    dropped = truncate_metrics(out_dir / "csv" / "metrics.csv", step)
    if dropped:
        log.info("csv/metrics.csv: dropped %d rows the interrupted attempt logged after step %d", dropped, step)
    return str(ckpt)


def start_over(out_dir: Path, had_checkpoints: bool, loggers: Any, earlier_attempt: bool) -> None:
    """A run with no usable checkpoint starts at step 0: the killed attempt's CSV rows go, and its W&B run is left as
    it ended while this attempt logs to a new one."""
    if had_checkpoints:
        log.warning("no usable checkpoint in %s: starting from step 0", out_dir / "checkpoints")
    dropped = truncate_metrics(out_dir / "csv" / "metrics.csv", 0)
    if dropped:
        log.info("csv/metrics.csv: dropped the %d rows of the attempt that left no usable checkpoint", dropped)
    for logger in loggers:
        if hasattr(logger, "start_new_run") and earlier_attempt:
            old = wandb_id(out_dir)
            (out_dir / "wandb_id.txt").unlink()
            new = wandb_id(out_dir)
            logger.start_new_run(new)
            log.info("W&B: the killed attempt's run %s is left as it ended; this attempt logs to a new run %s", old, new)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@exit_on_lra_error
def main(cfg: DictConfig) -> float:
    multirun = is_multirun()
    check_multirun_ddp(cfg)
    if not multirun:  # before the run folder is touched; a sweep's bad cell fails in it (error.json) like any other
        check_names(cfg)
        check_options(cfg)
    try:
        result = train(cfg)
    except Exception as e:
        if not multirun:
            raise
        # one failing cell never stops the sweep: it is recorded (error.json) and summarised at the end
        log.error("job failed: %s: %s", type(e).__name__, e)
        return float("nan")
    if "preempted" in result:
        if multirun and not jobs_share_this_process():
            return float("nan")  # a scheduler's job (SLURM): only this job was signalled, it is requeued
        sys.exit(128 + result["preempted"])  # SIGTERM/Ctrl-C to a local sweep stops it (a rerun resumes this job)
    return float(result.get(cfg.get("optimized_metric", "val/acc_best"), float("nan")))


def jobs_share_this_process() -> bool:
    """A local multirun (Hydra's basic launcher) runs every job in this process: a signal to it is meant for the
    whole sweep, so a job it preempted stops the sweep instead of letting the next job start."""
    hc = hydra_runtime()
    target = str(OmegaConf.select(hc, "launcher._target_", default="")) if hc is not None else ""
    return target.endswith("BasicLauncher")


def check_experiment_names(argv: list[str]) -> None:
    """Hydra lists only a group's top level when an experiment is unknown (quick, quick_pathfinder, not the lra/*
    presets): name the unknown one and list every preset, before Hydra starts."""
    import difflib

    from lra_bench.config import available

    from hydra.core.override_parser.overrides_parser import OverridesParser

    searchpath = [str(p) for a in argv if a.startswith("hydra.searchpath=")
                  for p in OverridesParser.create().parse_override(a).value()]
    presets = available("experiment", searchpath or None)
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        if key != "experiment" or not value or "(" in value:
            continue
        for name in value.split(","):
            if name and name not in presets:
                close = difflib.get_close_matches(name, presets, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                lra = [p.removeprefix("lra/").split("-", 1) for p in presets if p.startswith("lra/") and "-" in p]
                models, tasks = sorted({m for m, _ in lra}), sorted({t for _, t in lra})
                others = [p for p in presets if not p.startswith("lra/")]
                print(f"error: unknown experiment {name!r}.{hint} Valid: lra/<model>-<task> with model in "
                      f"{', '.join(models)} and task in {', '.join(tasks)}; {', '.join(others)} (conf/experiment/)",
                      file=sys.stderr)
                sys.exit(2)


if __name__ == "__main__":
    from lra_bench.config import check_override_keys

    check_experiment_names(sys.argv[1:])
    check_override_keys(sys.argv[1:])
    main()
