"""One document, two renderings: ``report.md`` (figures as PNG files beside it) and a self-contained
``index.html`` (figures inline as base64 PNG, inline CSS, no external assets)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str        # file name under plots/
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Figure] = field(default_factory=list)
    level: int = 2


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += ["#" * sec.level + " " + sec.title, ""]
        for block in sec.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            elif isinstance(block, Figure):
                lines.append(f"![{block.caption}](plots/{block.name})")
                lines.append(f"*{block.caption}*")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
td.paper,th.paper{background:#eef4ff}code{background:#f4f4f4;padding:0 3px}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}.gt{font-weight:bold;color:#0a6}"""


def _inline(text: str) -> str:
    """Escape, then the two markdown spans the report uses: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def to_html(title: str, sections: list[Section]) -> str:
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h{sec.level}>{html.escape(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            if isinstance(block, Table):
                paper = [h.startswith("paper") for h in block.header]
                head = "".join(f"<th{' class=paper' if p else ''}>{html.escape(h)}</th>"
                               for h, p in zip(block.header, paper, strict=True))
                body = "".join("<tr>" + "".join(f"<td{' class=paper' if p else ''}>{_inline(str(c))}</td>"
                                                for c, p in zip(row, paper, strict=True)) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                parts.append(f"<p>{_inline(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(out: Path, title: str, sections: list[Section]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    figures = [b for s in sections for b in s.blocks if isinstance(b, Figure)]
    if figures:
        (out / "plots").mkdir(exist_ok=True)
        for fig in figures:
            (out / "plots" / fig.name).write_bytes(fig.png)
    (out / "report.md").write_text(to_markdown(title, sections))
    (out / "index.html").write_text(to_html(title, sections))
