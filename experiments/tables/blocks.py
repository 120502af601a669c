"""What every generated block (README.md, docs/, results/) shares: the generator's command, finding
``<!-- kind: body -->`` … ``<!-- /kind -->`` pairs, regenerating their content, and wrapping prose at the README's
width.

``results-table`` (``results_table.py``) keeps its own parser (its fields and fenced-code rules);
``reproduction-table``, ``comparison-table``, ``json-table`` and ``leaderboard-table`` are rendered through
:func:`render_blocks`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from experiments.results.runs import ReportError

WRAP = 115  # line width of generated prose in the README

# the command that regenerates every block; generated prose names it so a reader knows how the table was made
COMMAND = "python -m experiments.tables"

Stale = tuple[str, str, str]  # (where, old content, new content)


def wrap(text: str, width: int = WRAP) -> list[str]:
    """Greedy wrap at spaces; a word that markdown would read as a list item or heading at the start of a line
    (``-``, ``+``, ``*``, ``#``, ``1.``, ``>...``) or as a heading underline (``===``) stays on the line before."""
    lines: list[str] = []
    for word in text.split(" "):
        risky = re.fullmatch(r"[-+*#]|\d+[.)]|=+|-+", word) is not None or word.startswith(">")
        if lines and (len(lines[-1]) + 1 + len(word) <= width or risky):
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def block_start(kind: str) -> re.Pattern[str]:
    """The opening marker ``<!-- kind: body -->`` (body over several lines allowed)."""
    return re.compile(rf"^<!--[ \t]*{re.escape(kind)}[ \t]*:(?P<body>.*?)-->", re.M | re.S)


def render_blocks(text: str, name: str, base: Path, kind: str,
                  generate: Callable[[str, Path, str], str]) -> tuple[str, list[Stale]]:
    """``text`` with every ``kind`` block's content replaced by ``generate(body, base, where)``, and the stale
    blocks as (where, old, new)."""
    end_marker = f"<!-- /{kind} -->"
    out, pos, stale = [], 0, []
    for m in block_start(kind).finditer(text):
        where = f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {kind}"
        end = text.find(end_marker, m.end())
        if end < 0:
            raise ReportError(f"{where}: no closing `{end_marker}`")
        new = "\n" + generate(m.group("body"), base, where) + "\n"
        old = text[m.end():end]
        if old != new:
            stale.append((where, old, new))
        out += [text[pos:m.end()], new]
        pos = end
    out.append(text[pos:])
    return "".join(out), stale
