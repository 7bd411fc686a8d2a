"""The README's option tables, printed from the schemas: ``python -m lra_bench.models.options.table [model ...]``.

With no argument, every built-in model as the README holds them (between its ``options:begin`` / ``options:end``
markers; ``tests/test_model_options.py`` checks they are equal): the classifier's keys and the LRA Transformer
block's once, then each model's own keys and the rules between keys. With model names, those models' tables alone.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from lra_bench.models.options.builtin import CLASSIFIER_LRA_CODE, SCHEMAS, classifier, transformer_backbone
from lra_bench.models.options.rules import Option, Schema

BASED_ON = {"mega_chunk": "mega", "s4d": "s4"}  # shown as their differences
BEGIN, END = "<!-- options:begin (generated: python -m lra_bench.models.options.table) -->", "<!-- options:end -->"


def rows(options: Iterable[Option]) -> list[str]:
    lines = ["| key | valid values | meaning |", "|---|---|---|"]
    return lines + [f"| `model.{o.key}` | {o.rule.text.replace('|', '/')} | {o.meaning} |" for o in options]


def section(title: str, options: Sequence[Option], rules: Sequence[str] = ()) -> list[str]:
    """One collapsible table, the rules between keys under it."""
    out = [f"<details><summary>{title}</summary>", "", *rows(options), ""]
    if rules:
        out += ["Between keys: " + "; ".join(rules) + ".", ""]
    return out + ["</details>", ""]


def relations_text(schema: Schema) -> list[str]:
    return [f"`{r.key.rsplit('.', 1)[-1]}` {r.text}" for r in schema.relations]


def model_table(schema: Schema, shared: Sequence[Option] = ()) -> list[str]:
    base = SCHEMAS.get(BASED_ON.get(schema.model, ""))
    title = f"<code>{schema.model}</code>"
    if base is not None:
        shared = (*shared, *base.options)
        title += f": as <code>{base.model}</code>, except"
    own = [o for o in schema.options if o not in shared]
    rules = [r for r in relations_text(schema) if base is None or r not in relations_text(base)]
    if base is not None and not own and not rules:
        return [f"<code>{schema.model}</code> takes the options of <code>{base.model}</code>.", ""]
    return section(title, own, rules)


def readme_tables() -> str:
    """Every built-in model's options, the shared keys once."""
    common = classifier(lra_code=CLASSIFIER_LRA_CODE)
    block = transformer_backbone((), lra_code=False)  # the keys Luna shares; the 11 models list their lra_code
    block_models = [name for name, s in SCHEMAS.items() if set(block) <= set(s.options)]
    out = [BEGIN, ""]
    out += section("Every model: <code>model.d_model</code> and the classifier (<code>lra_code</code>: the LRA "
                   "Transformer block's models only)", common)
    out += section(f"The LRA Transformer block (and Luna's): {', '.join(f'<code>{m}</code>' for m in block_models)}", block)
    for schema in SCHEMAS.values():
        out += model_table(schema, (*common, *(block if schema.model in block_models else ())))
    return "\n".join([*out, END])


def main(argv: Sequence[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    unknown = [n for n in names if n not in SCHEMAS]
    if unknown:
        print(f"error: no built-in schema for {', '.join(unknown)}; built-in models: {', '.join(SCHEMAS)}", file=sys.stderr)
        return 2
    if not names:
        print(readme_tables())
    for name in names:
        print("\n".join(model_table(SCHEMAS[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
