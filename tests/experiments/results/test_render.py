"""Sections as markdown and self-contained HTML (experiments/results/render.py)."""

from __future__ import annotations

import base64
from pathlib import Path

from experiments.results.render import Figure, Raw, Section, Table, inline, md_blocks, to_html, to_markdown, write

PNG = b"\x89PNG\r\n\x1a\nnot really an image"


def _sections() -> list[Section]:
    return [Section("Main table", ["Numbers in `percent`, **mean**.",
                                   Table(["group", "paper T2V R@1"], [["a | b", "44.5"], ["<c>", "—"]])]),
            Section("Plots", [Figure("curves.png", PNG, "loss & recall")]),
            Section("Browser", [Raw("<div id='qb'></div>", ["browser text", Table(["q"], [["x"]])])], level=3)]


def test_markdown_escapes_cells_and_links_figures_beside_it() -> None:
    md = to_markdown("t", _sections())
    assert md.startswith("# t\n\n## Main table\n\nNumbers in `percent`, **mean**.\n")
    assert "| group | paper T2V R@1 |\n|---|---|\n| a \\| b | 44.5 |\n| <c> | — |" in md
    assert "![loss & recall](plots/curves.png)\n*loss & recall*" in md
    assert "### Browser\n\nbrowser text\n\n| q |\n|---|\n| x |" in md and "<div id='qb'>" not in md
    assert md_blocks(["one", "two"]) == ["one", "", "two", ""]


def test_html_is_self_contained_and_escaped() -> None:
    page = to_html("a <title>", _sections())
    assert "<title>a &lt;title&gt;</title>" in page and "<section id='main-table'><h2>Main table</h2>" in page
    assert "<p>Numbers in <code>percent</code>, <b>mean</b>.</p>" in page
    assert "<td>&lt;c&gt;</td>" in page and "<th class=paper>paper T2V R@1</th>" in page
    assert f"src='data:image/png;base64,{base64.b64encode(PNG).decode()}'" in page
    assert "<div id='qb'></div>" in page and "browser text" not in page  # Raw: its own HTML
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert inline("`a<b` **c**") == "<code>a&lt;b</code> <b>c</b>"
    assert Section("Paired comparison (bootstrap over queries)").anchor == "paired-comparison-bootstrap-over-queries"


def test_write_puts_the_figures_beside_report_md(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write(out, "t", _sections())
    assert (out / "plots" / "curves.png").read_bytes() == PNG
    assert (out / "report.md").read_text() == to_markdown("t", _sections())
    assert (out / "index.html").read_text() == to_html("t", _sections())
    write(tmp_path / "bare", "t", [Section("Only text", ["x"])])
    assert not (tmp_path / "bare" / "plots").exists()
