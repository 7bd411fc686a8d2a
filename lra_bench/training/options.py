"""Options checked before anything is built: one line naming the option and the fix, instead of a traceback deep
inside Lightning or PyTorch (ZeroDivisionError for lr 0, NumPy's seed error for seed -1, ...).

The run's own options are checked here; the model's are declared in its schema (``lra_bench/models/options/``) and
checked by ``check_model_options``, called last."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from lra_bench.errors import ConfigError
from lra_bench.models.options.check import check_model_options
from lra_bench.models.options.rules import is_int, is_number
from lra_bench.pretraining.stages import check_pretrain_options
from lra_bench.training.compile import setting_rule, valid_setting
from lra_bench.training.diagnosis import ON_CHANCE
from lra_bench.training.optim import check_optimizer_and_schedule
from lra_bench.training.stopping import time_limit_s


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def _lightning_precisions() -> tuple[str, ...]:
    """The precisions Lightning's Trainer accepts (its own list, so a new one is never refused)."""
    from typing import get_args

    from lightning_fabric.connector import _PRECISION_INPUT

    return tuple(dict.fromkeys(str(v) for group in get_args(_PRECISION_INPUT) for v in get_args(group)))


PRECISIONS = _lightning_precisions()


def check_options(cfg: DictConfig) -> None:
    """Raise ConfigError for the first option out of its range: the run's, then the model's (its schema)."""
    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={_get(cfg, key)!r}: {rule}")

    length = _get(cfg, "task.max_length")
    need(is_int(length) and length >= 1, "task.max_length", "must be an integer >= 1")
    classes = _get(cfg, "task.num_classes")
    need(is_int(classes) and classes >= 2, "task.num_classes", "must be an integer >= 2 (the task's labels)")
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
    check_optimizer_and_schedule(lambda key: _get(cfg, key), need)
    warmup = _get(cfg, "scheduler.warmup_steps")
    fraction = _get(cfg, "scheduler.warmup_fraction")
    need(fraction is None or (isinstance(fraction, (int, float)) and 0 <= fraction <= 1), "scheduler.warmup_fraction",
         "must be null or a number in [0, 1]")
    need(warmup is None or fraction is None, "scheduler.warmup_steps",
         f"and scheduler.warmup_fraction={fraction!r} are both set; set only one (e.g. add scheduler.warmup_fraction=null)")
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
        need(_get(cfg, "trainer.limit_train_batches") != 0, "trainer.limit_train_batches",
             "trains nothing (and would record a finished run); use a number > 0 (batches, or a fraction of the epoch), "
             "or train=false to only test")
        need(max_steps is None or (is_int(max_steps) and max_steps >= -1), "trainer.max_steps",
             "must be an integer > 0, or -1 (the epochs decide)")
        need(max_epochs is None or (is_int(max_epochs) and max_epochs >= -1), "trainer.max_epochs",
             "must be an integer > 0, or -1 (trainer.max_steps decides)")
    try:  # Lightning's Timer refuses a malformed one deep inside the trainer's construction, with a traceback
        limit = time_limit_s(_get(cfg, "trainer.max_time"))
    except Exception:
        limit = -1.0
    need(limit is None or limit > 0, "trainer.max_time",
         'must be null or a positive duration "DD:HH:MM:SS" (e.g. "00:12:00:00" for 12 hours)')
    precision = _get(cfg, "trainer.precision")
    need(precision is None or str(precision) in PRECISIONS, "trainer.precision",
         f"must be one of {', '.join(PRECISIONS)} (Lightning's; bf16-mixed for speed)")
    clip = _get(cfg, "trainer.gradient_clip_val")
    need(clip is None or (is_number(clip) and clip >= 0), "trainer.gradient_clip_val",
         "must be null or a number >= 0 (0 or null: no clipping; Lightning ignores a negative one)")
    interval = _get(cfg, "trainer.val_check_interval")
    need(interval is None or (is_int(interval) and interval >= 1) or (is_number(interval) and 0 < interval <= 1),
         "trainer.val_check_interval", "must be null, an integer >= 1 (batches) or a fraction of the epoch in (0, 1]")
    fraction = _get(cfg, "chance.fraction")
    need(fraction is None or (is_number(fraction) and 0 < fraction <= 1), "chance.fraction",
         "must be a number in (0, 1]: the part of the schedule after which a run at chance is named")
    z = _get(cfg, "chance.z")
    need(z is None or (is_number(z) and z >= 0), "chance.z", "must be a number >= 0 and finite (standard errors)")
    need(_get(cfg, "on_chance") in (None, *ON_CHANCE), "on_chance", f"must be one of {', '.join(ON_CHANCE)}")
    need(_get(cfg, "on_nonfinite") in (None, "stop", "skip"), "on_nonfinite", "must be one of stop, skip")
    every = _get(cfg, "checkpoint_every_n_steps")
    need(every is None or (is_int(every) and every >= 1), "checkpoint_every_n_steps", "must be an integer >= 1")
    need(_get(cfg, "lra_code") in (True, False), "lra_code", "must be true (LRA's released code) or false (the papers')")
    lra_cosine = _get(cfg, "scheduler.lra_cosine")
    need(lra_cosine in (None, True, False), "scheduler.lra_cosine", "must be true or false (default: lra_code's value)")
    if _get(cfg, "lra_code") and _get(cfg, "model.net.lra_code") is not True:
        raise ConfigError(f"lra_code=true reproduces LRA's released code, whose models are the LRA Transformer block "
                          f"with an attention mechanism; model={_get(cfg, 'model.name')} is not one of them "
                          "(its config has no model.net.lra_code): set lra_code=false")
    if not valid_setting(_get(cfg, "compile")):  # the rule names torch's backends: built only when needed
        raise ConfigError(f"compile={_get(cfg, 'compile')!r}: {setting_rule()}")
    check_pretrain_options(cfg)
    check_model_options(cfg)
