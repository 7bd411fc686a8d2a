"""Print the resolved config and the model's size: ``python -m lra_bench.describe experiment=... [overrides]``.

For a built-in preset (``experiment=lra/<model>-<task>``) each recorded value carries its source as a comment beside
it: upstream repository, commit, file and line, or the reason it deviates (``lra_bench/provenance/records``); a value
changed on the command line is flagged as overridden.

The last line is one JSON object: ``task``, ``model``, ``params_total``, ``params_non_embedding``
(token and position tables left out) and ``params_by_module`` (top-level children of the classifier).
Nothing is trained and no data is read.
"""

from __future__ import annotations

import json
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from lra_bench.training.callbacks import count_parameters
from lra_bench.config import CONFIG_PATH, check_names, exit_on_lra_error, resolve_vocab_size
from lra_bench.errors import LRAError
from lra_bench.provenance.check import annotate
from lra_bench.provenance.loader import preset_records
from lra_bench.training.options import check_options


def describe(cfg: DictConfig) -> dict:
    check_names(cfg)
    check_options(cfg)
    note = None
    try:
        resolve_vocab_size(cfg)  # reads the data only when the vocabulary comes from it
    except LRAError as e:  # the non-embedding count does not depend on the vocabulary
        with open_dict(cfg):
            cfg.task.vocab_size = 256
        note = f"vocabulary comes from the data, which is not there ({e}); counted with 256 tokens"
    net = instantiate(cfg.model.net)
    by_module = {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}
    info = {"task": cfg.task.name, "model": cfg.model.name, **count_parameters(net), "params_by_module": by_module}
    return info | ({"note": note} if note else {})


def resolved_yaml_with_sources(cfg: DictConfig, experiment: str | None) -> str:
    """The resolved config as YAML; with a built-in preset's records, each recorded key's source beside it."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    entries = preset_records(experiment.removeprefix("lra/")) if experiment and experiment.startswith("lra/") else None
    if entries is None:
        return text
    header = f"# values annotated with their source: lra_bench/provenance/records ({experiment})\n"
    return header + annotate(text, cfg, entries)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="describe")
@exit_on_lra_error
def main(cfg: DictConfig) -> None:
    print(resolved_yaml_with_sources(cfg, HydraConfig.get().runtime.choices.get("experiment")))
    print(json.dumps(describe(cfg)))


if __name__ == "__main__":
    from lra_bench.config import check_override_keys
    from lra_bench.train import check_experiment_names

    check_experiment_names(sys.argv[1:])  # an unknown preset: every lra/* preset listed, not Hydra's top level
    check_override_keys(sys.argv[1:], "describe")
    main()
