"""Options checked before anything is built: one line naming the option and the fix, instead of a traceback deep
inside Lightning or PyTorch (ZeroDivisionError for lr 0, NumPy's seed error for seed -1, ...).

The run's own options are checked here; the model's are declared in its schema (``lra_bench/models/options/``) and
checked by ``check_model_options``, called last."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import ConfigError
from lra_bench.models.options.check import check_model_options
from lra_bench.models.options.rules import is_int
from lra_bench.training.optim import DECAYS


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_options(cfg: DictConfig) -> None:
    """Raise ConfigError for the first option out of its range: the run's, then the model's (its schema)."""
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_get(cfg, key)!r}: {rule}")

    length = _get(cfg, "task.max_length")
    need(is_int(length) and length >= 1, "task.max_length", "must be an integer >= 1")
    batch = _get(cfg, "task.batch_size")
    need(is_int(batch) and batch >= 1, "task.batch_size", "must be an integer >= 1")
    eval_batch = _get(cfg, "task.datamodule.eval_batch_size")
    need(eval_batch is None or (is_int(eval_batch) and eval_batch >= 1), "task.datamodule.eval_batch_size",
         "must be null (the train batch size) or an integer >= 1")
    workers = _get(cfg, "task.datamodule.num_workers")
    need(workers is None or (is_int(workers) and workers >= 0), "task.datamodule.num_workers",
         "must be an integer >= 0 (0 loads in the main process)")
    seed = _get(cfg, "seed")
    need(is_int(seed) and 0 <= seed < 2**32, "seed", "must be an integer in 0 .. 2^32 - 1")
    lr = _get(cfg, "optimizer.lr")
    need(isinstance(lr, (int, float)) and lr > 0, "optimizer.lr", "must be a number > 0")
    wd = _get(cfg, "optimizer.weight_decay")
    need(wd is None or (isinstance(wd, (int, float)) and wd >= 0), "optimizer.weight_decay", "must be a number >= 0")
    need(_get(cfg, "scheduler.decay") in DECAYS, "scheduler.decay", f"must be one of {', '.join(DECAYS)}")
    warmup = _get(cfg, "scheduler.warmup_steps")
    need(warmup is None or (is_int(warmup) and warmup >= 0), "scheduler.warmup_steps", "must be null or an integer >= 0")
    fraction = _get(cfg, "scheduler.warmup_fraction")
    need(fraction is None or (isinstance(fraction, (int, float)) and 0 <= fraction <= 1), "scheduler.warmup_fraction",
         "must be null or a number in [0, 1]")
    total = _get(cfg, "scheduler.total_steps")
    need(total is None or (is_int(total) and total >= 1), "scheduler.total_steps",
         "must be null (the steps the trainer runs) or an integer >= 1")
    accumulate = _get(cfg, "trainer.accumulate_grad_batches")
    need(accumulate is None or (is_int(accumulate) and accumulate >= 1), "trainer.accumulate_grad_batches",
         "must be an integer >= 1")
    if cfg.get("train", True):
        max_steps, max_epochs = _get(cfg, "trainer.max_steps"), _get(cfg, "trainer.max_epochs")
        need(max_steps != 0, "trainer.max_steps",
             "trains nothing (and would record a finished run); use a number > 0, -1 (epochs decide), or train=false to "
             "only test")
        need(max_epochs != 0, "trainer.max_epochs", "trains nothing; use a number > 0, or -1 with trainer.max_steps")
    every = _get(cfg, "checkpoint_every_n_steps")
    need(every is None or (is_int(every) and every >= 1), "checkpoint_every_n_steps", "must be an integer >= 1")
    need(_get(cfg, "lra_code") in (True, False), "lra_code", "must be true (LRA's released code) or false (the papers')")
    lra_cosine = _get(cfg, "scheduler.lra_cosine")
    need(lra_cosine in (None, True, False), "scheduler.lra_cosine", "must be true or false (default: lra_code's value)")
    if _get(cfg, "lra_code") and _get(cfg, "model.net.lra_code") is not True:
        raise ConfigError(f"lra_code=true reproduces LRA's released code, whose models are the LRA Transformer block "
                          f"with an attention mechanism; model={_get(cfg, 'model.name')} is not one of them "
                          "(its config has no model.net.lra_code): set lra_code=false")
    check_model_options(cfg)
