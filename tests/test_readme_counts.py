"""The README's counts of models, tasks and presets are the counts in conf/ (they had drifted to 21 and 126 while
conf/ held 19 models and 114 presets; the two bench-only Transformer variants are no `model=`)."""

from __future__ import annotations

import re

from lra_bench.config import CONFIG_DIR, PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def names(group: str) -> set[str]:
    return {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")}


def test_every_model_count_in_the_readme_is_conf_models() -> None:
    counts = [int(n) for n in re.findall(r"\b(\d+) models\b", README)]
    assert counts and set(counts) == {len(names("model"))}, counts


def test_every_preset_count_in_the_readme_is_conf_experiment_lra() -> None:
    counts = [int(n) for n in re.findall(r"\b(\d+) presets\b|preset \((\d+)\)", README) for n in n if n]
    assert counts and set(counts) == {len(names("experiment/lra"))}, counts
    assert len(names("experiment/lra")) == len(names("model")) * len(names("task"))


def test_the_task_count_and_the_model_table_match_conf() -> None:
    assert set(int(n) for n in re.findall(r"× (\d+) tasks", README)) == {len(names("task"))}
    table = README[README.index("| family | models (`model=`)"):README.index("Each mechanism is tested")]
    listed = set(re.findall(r"`([a-z0-9_]+)`", "\n".join(row.split("|")[2] for row in table.splitlines()[2:] if row)))
    assert listed == names("model")
