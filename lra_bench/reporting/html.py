"""Markdown to one self-contained HTML page, with markdown-it-py (CommonMark + pipe tables; it comes with ``rich``).

Raw HTML in the markdown is escaped, not passed through (run names and paths are text). Every image that names
a local file (``![alt](plot.png)``, relative to ``image_dir``) is embedded as a ``data:`` URI, so the page needs
nothing beside it. Code in a table cell (a run folder, named by its overrides with no space in them) may break anywhere,
so that no table is wider than the page (``tests/test_report_browser.py`` checks it in Chromium).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}td code{overflow-wrap:anywhere}th{background:#f3f3f3}img{max-width:100%}"
         "em{color:#444}code{background:#f3f3f3;padding:0 2px}")


def data_uri(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_to_html(md: str, image_dir: Path | None = None, title: str = "lra_bench report") -> str:
    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(md)
    for token in tokens:
        for child in token.children or ():
            src = child.attrGet("src") if child.type == "image" else None
            if src and image_dir is not None and (Path(image_dir) / src).is_file():
                child.attrSet("src", data_uri(Path(image_dir) / src))
    body = parser.renderer.render(tokens, parser.options, {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")
