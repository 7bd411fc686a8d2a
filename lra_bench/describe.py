"""Print the resolved config and the model's size: ``python -m lra_bench.describe experiment=... [overrides]``.

The last line is one JSON object: ``task``, ``model``, ``params_total``, ``params_non_embedding``
(token and position tables left out) and ``params_by_module`` (top-level children of the classifier).
Nothing is trained and no data is read.
"""

from __future__ import annotations

import json

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lra_bench.callbacks import count_parameters
from lra_bench.config import CONFIG_PATH, check_names, exit_on_lra_error, resolve_vocab_size


def describe(cfg: DictConfig) -> dict:
    check_names(cfg)
    resolve_vocab_size(cfg)  # reads the data only when the vocabulary comes from it
    net = instantiate(cfg.model.net)
    by_module = {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}
    return {"task": cfg.task.name, "model": cfg.model.name, **count_parameters(net), "params_by_module": by_module}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="describe")
@exit_on_lra_error
def main(cfg: DictConfig) -> None:
    print(OmegaConf.to_yaml(cfg, resolve=True))
    print(json.dumps(describe(cfg)))


if __name__ == "__main__":
    main()
