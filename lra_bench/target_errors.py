"""A ``_target_`` that Hydra cannot load, in one whole line with the closest existing name.

Hydra wraps the reason in a three-line ``ImportError`` ("Error loading 'pkg.model.BiHyenna':", the
``ModuleNotFoundError`` or ``AttributeError``, "Are you sure ..."), under an ``InstantiationException`` that only says
"Error locating target"; printed as its first line, the reason is cut off. Here the lines are joined and the name
that was meant is looked up among what the module really holds."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
import sys


def _loading_error(e: BaseException | None) -> ImportError | None:
    """Hydra's "Error loading '<path>':" ImportError in ``e``'s chain of causes, if any."""
    while e is not None:
        if isinstance(e, ImportError) and str(e).startswith("Error loading '"):
            return e
        e = e.__cause__ or e.__context__
    return None


def closest_name(path: str) -> str | None:
    """The existing dotted name nearest to ``path``: its longest importable module, then the closest attribute or
    submodule of it for the first part that does not exist (None when nothing is close)."""
    parts = path.split(".")
    module, depth = None, 0
    for i in range(1, len(parts)):
        try:
            module = importlib.import_module(".".join(parts[:i]))
            depth = i
        except Exception:  # noqa: BLE001 - the first part that does not import ends the walk
            break
    if module is None:  # the package itself: an installed top-level name (editable installs are in sys.modules)
        names = [m.name for m in pkgutil.iter_modules()] + [n for n in sys.modules if "." not in n]
    else:
        holder = module
        for part in parts[depth:-1]:  # attributes below the module (a class's nested name)
            if not hasattr(holder, part):
                break
            holder, depth = getattr(holder, part), depth + 1
        names = [n for n in dir(holder) if not n.startswith("_")]
        if hasattr(holder, "__path__"):
            names += [m.name for m in pkgutil.iter_modules(holder.__path__)]
    close = difflib.get_close_matches(parts[depth], names, n=1, cutoff=0.6)
    if not close:
        return None
    fixed = ".".join([*parts[:depth], close[0]])
    rest = ".".join(parts[depth + 1:])
    return f"{fixed}.{rest}" if rest and _exists(f"{fixed}.{rest}") else fixed


def _exists(path: str) -> bool:
    from hydra.utils import get_object

    try:
        get_object(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def target_error(e: BaseException) -> str | None:
    """One line for a ``_target_`` that cannot be loaded (the whole reason and the closest existing name), or None
    when ``e`` is some other error."""
    found = _loading_error(e)
    if found is None:
        return None
    lines = str(found).splitlines()
    match = re.match(r"Error loading '([^']+)'", lines[0])
    path = match.group(1) if match else "?"
    reason = "; ".join(line.strip().rstrip("?.") + ("?" if line.strip().endswith("?") else "") for line in lines[1:]
                       if line.strip())
    close = closest_name(path) if match else None
    hint = f"; closest existing name: {close}" if close and close != path else ""
    return f"_target_ {path!r} cannot be loaded: {reason}{hint}"
