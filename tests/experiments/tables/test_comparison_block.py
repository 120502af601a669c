"""``comparison-table`` blocks (experiments/tables/comparison_block.py): the report's paired comparison as markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.tables.cli import main
from tests.tables_helpers import (
    DEMO,
    copy_run,
)


def test_comparison_block_is_the_reports_paired_comparison(tmp_path: Path) -> None:
    study = tmp_path / "results" / "demo"
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, study / name)  # with queries.npz and the test set: the bootstrap needs them
    readme = tmp_path / "README.md"
    readme.write_text("<!-- comparison-table: results/demo -->\n<!-- /comparison-table -->\n")
    assert main([str(readme)]) == 0
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| G1 "))
    r1 = {n: json.loads((DEMO / n / "metrics.json").read_text())["metrics"]["t2v_R1"]
          for n in ("clip4clip_meanP", "clip4clip_seqTransf")}
    assert f"{r1['clip4clip_meanP'] - r1['clip4clip_seqTransf']:+.2f} [" in row  # one seed pair: pooled = seed 0
    # the report's section without its figures: a block links no image, so it reads the same from docs/ pages
    assert "![" not in text and "plots/" not in text
    assert main(["--check", str(readme)]) == 0


def test_comparison_block_merge_commits_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "results" / "demo"
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, study / name)
    other = copy_run(DEMO / "clip4clip_meanP", study / "clip4clip_meanP_other_commit")
    record = json.loads((other / "metrics.json").read_text())
    record["git_sha"], record["seed"] = "0" * 40, 1
    (other / "metrics.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- comparison-table: results/demo -->\n<!-- /comparison-table -->\n")
    assert main([str(readme)]) == 0
    assert "**G3**" in readme.read_text()  # two code versions of meanP: two groups
    readme.write_text("<!-- comparison-table: results/demo | merge-commits -->\n<!-- /comparison-table -->\n")
    assert main([str(readme)]) == 0
    assert "**G3**" not in readme.read_text() and "(2 runs)" in readme.read_text()
    readme.write_text("<!-- comparison-table: results/demo | nonsense -->\n<!-- /comparison-table -->\n")
    assert main([str(readme)]) == 2
    assert "the only option is `| merge-commits`" in capsys.readouterr().err
