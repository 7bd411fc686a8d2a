"""Load every split of a task and report what is there: ``python -m lra_bench.data_check task=<task> paths.data_dir=<root>``.

The last line printed is one JSON object:
``{"task", "vocab_size", "num_classes", "max_length", "splits": {"train": {"n", "max_len", "mean_len",
"label_counts"}, "val": ..., "test": ...}}``. Lengths are token counts after truncation (for paired
tasks, both documents' lengths are pooled). Builds the preprocessing cache if it is missing.
"""

from __future__ import annotations

import json
import logging

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from lra_bench.config import CONFIG_PATH, exit_on_lra_error
from lra_bench.data.base import SPLITS

log = logging.getLogger("lra_bench.data_check")


def check(cfg: DictConfig) -> dict:
    datamodule = instantiate(cfg.task.datamodule)
    datamodule.prepare_data()
    datamodule.setup()
    splits = {}
    for split in SPLITS:
        ds = datamodule.datasets[split]
        lengths = ds.lengths if ds.lengths2 is None else np.concatenate([ds.lengths, ds.lengths2])
        counts = np.bincount(ds.labels, minlength=int(cfg.task.num_classes))
        splits[split] = {
            "n": len(ds),
            "max_len": int(lengths.max()) if len(lengths) else 0,
            "mean_len": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            "label_counts": counts.tolist(),
        }
    return {
        "task": cfg.task.name,
        "vocab_size": int(cfg.task.vocab_size),
        "num_classes": int(cfg.task.num_classes),
        "max_length": int(cfg.task.max_length),
        "splits": splits,
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="data_check")
@exit_on_lra_error
def main(cfg: DictConfig) -> None:
    report = check(cfg)
    for split, s in report["splits"].items():
        log.info("%s: %d rows, max length %d, mean length %.1f", split, s["n"], s["max_len"], s["mean_len"])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
