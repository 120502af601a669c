"""The README and the docs site: the README stays a short front door, every relative link of the Markdown sources
resolves (files and #anchors), the site builds with `mkdocs build --strict`, and every page of its nav loads in a
headless Chromium with no console error and every image decoded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown.extensions.toc import slugify

from tests.browser_helpers import chromium, find_chromium, serve

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# pymdownx.snippets: --8<-- "path" or "path:section", paths from the repository root (mkdocs.yml base_path)
SNIPPET = re.compile(r"^\s*(?:<!--\s*)?--8<--\s+\"([^\"]+)\"")


def markdown_sources() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "results").rglob("README.md"))]


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked (a link there is code)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            yield number, INLINE_CODE.sub("``", line)


def heading_slugs(path: Path) -> set[str]:
    """The ids mkdocs' toc gives the headings of ``path`` (rendered text: code, emphasis and link markup dropped)."""
    slugs = set()
    # the raw lines (prose_lines would blank the code spans a heading's text keeps)
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced and (found := HEADING.match(line)):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", found.group(2)).replace("`", "").replace("*", "")
            slugs.add(slugify(text, "-"))
    return slugs


def broken_links(path: Path) -> list[str]:
    """Every relative link of ``path`` that names no file, or a heading its Markdown target does not have."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO)}:{number}: {target}"
            if not resolved.is_file():
                problems.append(f"{where} (no file {resolved})")
            elif anchor and resolved.suffix == ".md" and anchor not in heading_slugs(resolved):
                problems.append(f"{where} (no heading #{anchor} in {resolved.relative_to(REPO)})")
    # snippets are included inside code fences too (a file shown verbatim)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        snippet = SNIPPET.match(line)
        if snippet and not (REPO / snippet.group(1).split(":")[0]).is_file():
            problems.append(f"{path.relative_to(REPO)}:{number}: snippet {snippet.group(1)} names no file")
    return problems


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail "
                                       "into a page under docs/ and link it")


def test_every_relative_link_resolves() -> None:
    problems = [problem for path in markdown_sources() for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_a_broken_link_and_anchor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a missing file, a missing heading and a missing snippet are reported; code is not."""
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## What `make demo` does\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text("# A\n[ok](b.md#what-make-demo-does) [gone](c.md) [bad](b.md#nowhere) `[code](x.md)`\n"
                    "```\n[fenced](y.md)\n--8<-- \"results/none/README.md\"\n```\n[web](https://example.org/x)\n")
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "c.md" in problems[0] and "#nowhere" in problems[1] and "snippet" in problems[2]


def nav_pages(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_pages(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it (strict), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    # the snippets' base_path is the repository root, read from the working directory as `make docs` runs
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(REPO / "mkdocs.yml"), "--site-dir", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_the_site_builds_strict_with_every_nav_page(site: Path) -> None:
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    missing = [page for page in nav_pages(nav) if not (site / page).with_suffix(".html").is_file()]
    assert not missing, f"nav pages not built: {missing}"
    assert "BaseRetrievalModule" in (site / "reference" / "api" / "core.html").read_text(encoding="utf-8")


def test_every_page_loads_in_chromium(site: Path) -> None:
    binary, why = find_chromium()
    if binary is None:
        pytest.skip(why)
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages = [str(Path(page).with_suffix(".html")) for page in nav_pages(nav)]
    failures, images = [], 0
    with serve(site) as url, chromium(binary) as tab:
        for page in pages:
            tab.events.clear()
            tab.open(url + page)
            errors = tab.console_errors()
            broken = tab.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                  ".map(i => i.getAttribute('src'))")
            images += tab.evaluate("document.images.length")
            if errors or broken:
                failures.append(f"{page}: console errors {errors}, images not loaded {broken}")
    assert not failures, "\n".join(failures)
    assert images >= 5, f"only {images} images across the site: the figures of docs/img/ are missing"
