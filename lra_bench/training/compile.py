"""``compile=true``: the backbone's forward compiled by ``torch.compile`` (the classifier's embedding and head stay
eager). Compiled in place (``nn.Module.compile``), so checkpoint keys are those of an eager run and a checkpoint
resumes or tests with or without ``compile``.

``compile=true`` uses inductor; ``compile=<backend>`` names another torch.compile backend (``aot_eager`` traces and
differentiates the graph without generating code: a fast check that a backbone can be captured). A backbone
listed in ``NOT_COMPILABLE`` is refused before training starts, with one line naming the reason, rather than
failing at the first step, possibly hours into a queue. A user's own backbone is compiled without a check.
"""

from __future__ import annotations

from torch import nn

from lra_bench.errors import ConfigError

NOT_COMPILABLE: dict[str, str] = {}  # backbone class name -> why torch.compile cannot run it


def valid_setting(setting: object) -> bool:
    """``compile`` is true, false (null: false) or the name of a registered torch.compile backend; anything else
    (``compile=1``, ``compile=yes``, a misspelt backend) would raise torch's InvalidBackend deep in the model's
    build, with a traceback."""
    if setting is None or isinstance(setting, bool):
        return True
    if not isinstance(setting, str):
        return False
    from torch._dynamo import list_backends

    return setting in list_backends(exclude_tags=())


def setting_rule() -> str:
    """What ``compile`` accepts, for the one-line error."""
    from torch._dynamo import list_backends

    usual = sorted({*list_backends(), "aot_eager", "eager"})
    return (f"must be true (inductor), false, or a torch.compile backend: {', '.join(usual)} "
            "(all: torch._dynamo.list_backends(exclude_tags=()))")


def compile_backbone(backbone: nn.Module, setting: bool | str) -> nn.Module:
    """``backbone`` with its forward compiled in place, or ``ConfigError`` naming why it is not compiled."""
    name = type(backbone).__name__
    if name in NOT_COMPILABLE:
        raise ConfigError(f"compile={setting}: {name} is not compiled ({NOT_COMPILABLE[name]}); run without compile")
    backbone.compile(backend="inductor" if setting is True else str(setting))
    return backbone
