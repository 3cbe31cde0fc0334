"""One self-contained HTML file: the report's blocks with images embedded as base64 PNG.

No scripts, no external resources: it opens offline, in a mail attachment, or from a CI
artifact, and a browser finds nothing to fetch and nothing to complain about.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from webssl_cli.report.tables import Table

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
.note { color: #555; font-size: 12px; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 12px; }
"""


def render(title: str, blocks: list[Any], base: Path) -> str:
    """``blocks``: ('h2', text) | ('p', text) | ('li', text) | ('img', png path, caption) | Table;
    consecutive 'li' blocks form one list."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    in_list = False
    for b in blocks:
        is_li = not isinstance(b, Table) and b[0] == "li"
        if is_li != in_list:
            parts.append("<ul>" if is_li else "</ul>")
            in_list = is_li
        if is_li:
            parts.append(f"<li>{html.escape(b[1])}</li>")
        elif isinstance(b, Table):
            parts.append(b.html())
        elif b[0] == "h2":
            parts.append(f"<h2>{html.escape(b[1])}</h2>")
        elif b[0] == "p":
            parts.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "img":
            data = base64.b64encode((base / b[1]).read_bytes()).decode("ascii")
            cap = html.escape(b[2])
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
                f"<figcaption>{cap} (SVG: {html.escape(Path(b[1]).with_suffix('.svg').name)})</figcaption></figure>"
            )
    if in_list:
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def markdown(title: str, blocks: list[Any]) -> str:
    parts = [f"# {title}\n"]
    for b in blocks:
        if parts[-1].startswith("- ") and (isinstance(b, Table) or b[0] != "li"):
            parts[-1] += "\n"  # a list ends with a blank line
        if isinstance(b, Table):
            parts.append(b.markdown())
        elif b[0] == "h2":
            parts.append(f"## {b[1]}\n")
        elif b[0] == "p":
            parts.append(f"{b[1]}\n")
        elif b[0] == "li":
            parts.append(f"- {b[1]}")
        elif b[0] == "img":
            parts.append(f"![{b[2]}]({b[1]})\n\n[SVG]({Path(b[1]).with_suffix('.svg').name})\n")
    return "\n".join(parts)
