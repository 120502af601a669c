"""``python -m experiments.tables`` (experiments/tables/cli.py): which files it covers, --check, regeneration, paths
relative to the repository root; the first test is the check of the repository itself."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from experiments.tables.cli import main
from experiments.tables.results_table import find_blocks
from tests.tables_helpers import (
    MARKER,
    ROOT,
    edit_metrics,
    generate,
    r1,
    table_rows,
    write_readme,
)


def test_the_repository_blocks_match_the_committed_results(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry check itself: README.md, docs/**/*.md and results/**/README.md equal what their blocks generate
    from results/ (no file argument: the whole documentation of the repository)."""
    monkeypatch.chdir(ROOT)
    code = main(["--check"])
    out = capsys.readouterr()
    assert code == 0, ("generated tables differ from results/; run `python -m experiments.tables` and commit the "
                       "files it names\n" + out.out + out.err)
    assert "up to date" in out.out
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "results").rglob("README.md"))]
    blocks = [b for f in files for b in find_blocks(f.read_text(), str(f.relative_to(ROOT)))]
    assert {b.spec.inputs[0] for b in blocks} >= {"results/demo", "results/clip_init_synthvtr",
                                                  "results/precision_synthvtr"}


DOCS_BLOCK = "<!-- results-table: results/study | group: (.*)_s\\d+$ | columns: t2v_R1, seeds -->"
RESULTS_BLOCK = "<!-- results-table: results/demo | columns: t2v_R1 -->"


def _page(path: Path, block: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {path.stem}\n\n{block}\n<!-- /results-table -->\n")
    return path


def test_without_arguments_it_covers_the_readme_docs_and_results_readmes(
        registry: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths in a block are relative to the repository root in every file: the README's block moved unchanged into
    docs/methods/narvid.md gives the same table; a stale block in docs/ or results/x/README.md fails --check naming
    the file and line."""
    readme = _page(registry / "README.md", DOCS_BLOCK)
    docs = _page(registry / "docs" / "methods" / "narvid.md", DOCS_BLOCK)
    study = _page(registry / "results" / "demo" / "README.md", RESULTS_BLOCK)
    (registry / "docs" / "index.md").write_text("# no blocks here\n")
    monkeypatch.chdir(registry / "docs")  # the root is found above the current directory
    assert main(["--check"]) == 1
    out = capsys.readouterr().out
    for where in ("README.md:3:", "docs/methods/narvid.md:3:", "results/demo/README.md:3:"):
        assert f"stale: {where} <!-- results-table: results/" in out, out
    assert "3 of 3 generated block(s) stale in README.md, docs/methods/narvid.md, results/demo/README.md" in out

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 generated block(s) in 4 file(s) regenerated" in out
    assert main(["--check"]) == 0
    assert "3 generated block(s) in 4 file(s) up to date" in capsys.readouterr().out
    table = [line for line in docs.read_text().splitlines() if line.startswith("|")]
    assert table == [line for line in readme.read_text().splitlines() if line.startswith("|")]  # moved unchanged
    assert table_rows(docs)["A_old"][1] == "0,1"
    assert table_rows(study)["group"] == ["t2v R@1"] and len(table_rows(study)) == 3  # header + meanP, seqTransf

    edit_metrics(registry / "results" / "study" / "A_old_s1", t2v_R1=50.0)  # the docs page and README are stale now
    edit_metrics(registry / "results" / "demo" / "clip4clip_meanP", t2v_R1=1.0)  # and the study's README
    before = {p: p.read_text() for p in (readme, docs, study)}
    assert main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "stale: docs/methods/narvid.md:3:" in out and "stale: results/demo/README.md:3:" in out
    assert f"+| A_old | {statistics.fmean([r1(registry / 'results' / 'study' / 'A_old_s0'), 50.0]):.2f} ± " in out
    assert {p: p.read_text() for p in before} == before  # --check changes nothing


def test_an_explicit_file_resolves_paths_from_the_repository_root(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = _page(registry / "docs" / "narvid.md", DOCS_BLOCK)
    assert main([str(docs)]) == 0
    assert f"regenerated: {docs}:3: <!-- results-table: results/study" in capsys.readouterr().out
    assert main(["--check", str(docs)]) == 0
    assert len(table_rows(docs)) == 3  # header, A_old, B_new: results/study of the root, not of docs/


def test_errors_name_the_file_and_line(registry: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _page(registry / "README.md", DOCS_BLOCK)
    _page(registry / "docs" / "methods" / "bad.md", "<!-- results-table: results/missing | columns: t2v_R1 -->")
    monkeypatch.chdir(registry)
    assert main(["--check"]) == 2
    err = capsys.readouterr().err
    assert "docs/methods/bad.md:3: <!-- results-table: results/missing" in err and "results/missing" in err


def test_no_repository_root_is_an_error(tmp_path_factory: pytest.TempPathFactory,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    lone = tmp_path_factory.mktemp("no_repository")
    page = _page(lone / "page.md", RESULTS_BLOCK)
    before = page.read_text()
    assert main([str(page)]) == 2
    assert "no pyproject.toml in it or above it" in capsys.readouterr().err
    assert page.read_text() == before  # nothing written
    (lone / "results").mkdir()
    assert main(["--check", "--root", str(lone), str(page)]) == 2  # --root: resolved there (no runs: an error)
    assert "page.md:3: <!-- results-table: results/demo" in capsys.readouterr().err


def test_check_fails_with_a_diff_naming_the_block_and_regenerate_fixes_it(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = write_readme(registry, MARKER)
    code, out, _ = generate(readme, capsys, check=True)  # an empty block is stale
    assert code == 1 and f"stale: {readme}:5: <!-- results-table: results/study" in out
    assert generate(readme, capsys)[0] == 0
    assert generate(readme, capsys, check=True)[0] == 0
    study = registry / "results" / "study"
    a_values = [r1(study / "A_old_s0"), r1(study / "A_old_s1")]
    rows = table_rows(readme)
    assert rows["group"] == ["t2v R@1", "R@5", "seeds"]
    assert rows["before"] == [f"{statistics.fmean(a_values):.2f} ± {statistics.stdev(a_values):.2f}",
                              rows["before"][1], "0,1"]
    assert rows["after"][0] == f"{r1(study / 'B_new_s0'):.2f}" and rows["after"][2] == "0"  # one run: no ±
    text = readme.read_text()
    assert text.startswith("# study\n\nSome text | with a pipe.\n") and text.endswith("\n\nEnd.\n")
    flat = " ".join(text.split())  # the provenance paragraph is wrapped
    assert "Generated from `results/study` (3 runs)" in flat and "commit 0410456 (before) / 8a0f2ed (after)" in flat
    assert "seeds 0,1 (before) / 0 (after)" in flat
    assert "800 queries × 160 videos" in flat and "generator e457d1e22931" in flat

    edit_metrics(study / "A_old_s1", t2v_R1=50.0)  # a result changes: the README is now stale
    before = readme.read_text()
    code, out, _ = generate(readme, capsys, check=True)
    assert code == 1 and readme.read_text() == before  # --check changes nothing
    assert f"--- {readme}:5: <!-- results-table: results/study" in out
    old_row = next(line for line in before.splitlines() if line.startswith("| before |"))
    new_mean = statistics.fmean([r1(study / "A_old_s0"), 50.0])
    assert f"-{old_row}" in out and f"+| before | {new_mean:.2f} ± " in out
    assert "1 of 1 generated block(s) stale" in out

    assert generate(readme, capsys)[0] == 0
    assert table_rows(readme)["before"][0].startswith(f"{new_mean:.2f} ± ")
    assert generate(readme, capsys, check=True)[0] == 0
