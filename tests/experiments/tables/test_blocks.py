"""What every block kind shares (experiments/tables/blocks.py): wrapping generated prose, finding and regenerating
``<!-- kind: ... -->`` blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.results.errors import ReportError
from experiments.tables.blocks import block_start, render_blocks, wrap


def test_provenance_wrap_never_starts_a_line_with_markdown_syntax() -> None:
    text = "word " * 30 + "- 1. # >quoted ==="
    lines = wrap(text, width=20)
    assert " ".join(lines) == text and len(lines) > 5
    assert not any(line.split()[0] in ("-", "1.", "#", "===") or line.startswith(">") for line in lines)


def _fill(body: str, base: Path, where: str) -> str:
    return f"{body.strip()} from {base.name} at {where}"


def test_render_blocks_regenerates_each_block_and_reports_the_stale_ones(tmp_path: Path) -> None:
    text = ("intro\n<!-- demo-table: a -->\nold\n<!-- /demo-table -->\nmiddle\n"
            "<!-- demo-table: b -->\n" + _fill(" b", tmp_path, "page.md:6: demo-table") + "\n<!-- /demo-table -->\n")
    new, stale = render_blocks(text, "page.md", tmp_path, "demo-table", _fill)
    assert new == text.replace("\nold\n", "\n" + _fill(" a", tmp_path, "page.md:2: demo-table") + "\n")
    assert [where for where, _, _ in stale] == ["page.md:2: demo-table"]  # the second block was current
    assert render_blocks(new, "page.md", tmp_path, "demo-table", _fill)[1] == []


def test_a_block_without_its_closing_marker_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"docs/x\.md:3: demo-table: no closing `<!-- /demo-table -->`"):
        render_blocks("# x\n\n<!-- demo-table: a -->\nbody\n", "docs/x.md", tmp_path, "demo-table", _fill)
    multi = block_start("demo-table").search("<!-- demo-table:\n  multi\n  line -->")
    assert multi is not None and multi.group("body") == "\n  multi\n  line "
