"""One document, two renderings: ``report.md`` (figures as PNG files beside it) and a self-contained
``index.html`` (figures inline as base64 PNG, inline CSS and JavaScript, no external assets; the query browser's
thumbnails are JPEG files under ``thumbs/`` beside it, so the output folder is what travels)."""

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
class Raw:
    """A block with its own renderings: HTML inserted as is, and markdown blocks (text or tables)."""

    html: str
    markdown: list[str | Table] = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Figure | Raw] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        """The HTML id of the section: ``Main table`` -> ``main-table``."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_blocks(blocks: list[str | Table | Figure | Raw]) -> list[str]:
    lines = []
    for block in blocks:
        if isinstance(block, Raw):
            lines += md_blocks(list(block.markdown))
            continue
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
    return lines


def to_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += ["#" * sec.level + " " + sec.title, ""]
        lines += md_blocks(sec.blocks)
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
td.paper,th.paper{background:#eef4ff}code{background:#f4f4f4;padding:0 3px}
figure{margin:1em 0}figcaption{font-size:13px;color:#555}.gt{font-weight:bold;color:#0a6}
#qb-controls{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:1;font-size:14px}
#qb-controls select{margin:0 4px}.qb-sep{color:#aaa;margin:0 6px}#qb-status{color:#555;margin-left:8px}
.qb-note{color:#a40;font-size:13px}.qb-legend{font-size:13px}h3.qb-group{margin:1.2em 0 0.4em}
.qb-card{border:1px solid #ddd;border-radius:4px;padding:6px 8px;margin:8px 0}
.qb-head{font-size:14px;margin-bottom:4px}.qb-text{font-weight:600;margin-right:8px}
.qb-meta{color:#555;margin-left:8px;font-size:13px}
.qb-top{display:grid;grid-template-columns:repeat(6,minmax(0,1fr));gap:6px}
.qb-cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}.qb-colhead{font-size:13px;font-weight:600;margin:2px 0}
.qb-v{margin:0;border:2px solid transparent;padding:2px;font-size:12px;min-width:0}.qb-v img{width:100%;display:block}
.qb-v figcaption{color:#333;overflow-wrap:anywhere}.qb-v figcaption code{display:block}.qb-pos{color:#777}
.qb-v.qb-gt{border-color:#0a6;background:#efffef}.qb-v.qb-fam{border-color:#e80;background:#fff6e8}
.qb-badge{display:inline-block;font-size:11px;border-radius:3px;padding:0 4px;margin-left:4px;color:#fff}
.qb-badge-gt{background:#0a6}.qb-badge-fam{background:#e80}
.qb-nothumb{background:#eee;color:#888;text-align:center;padding:12px 0;font-size:11px}
.qb-aux{margin:2px 0 0;padding-left:14px;color:#555;font-size:11px}"""


def inline(text: str) -> str:
    """Escape, then the two markdown spans the report uses: `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def to_html(title: str, sections: list[Section]) -> str:
    # the empty data: icon keeps a browser from asking the server for /favicon.ico (a 404 in its console)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><link rel='icon' href='data:,'>",
             f"<title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        parts.append(f"<section id='{sec.anchor}'><h{sec.level}>{html.escape(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            if isinstance(block, Raw):
                parts.append(block.html)
            elif isinstance(block, Table):
                paper = [h.startswith("paper") for h in block.header]
                head = "".join(f"<th{' class=paper' if p else ''}>{html.escape(h)}</th>"
                               for h, p in zip(block.header, paper, strict=True))
                body = "".join("<tr>" + "".join(f"<td{' class=paper' if p else ''}>{inline(str(c))}</td>"
                                                for c, p in zip(row, paper, strict=True)) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                parts.append(f"<p>{inline(block)}</p>")
        parts.append("</section>")
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
