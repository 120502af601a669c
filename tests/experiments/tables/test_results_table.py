"""``results-table`` blocks (experiments/tables/results_table.py): their fields, grouping, provenance line and errors,
on a temporary README over copies of committed (registered, compact) runs. The check of the repository's own
files is in test_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.tables.cli import main
from tests.tables_helpers import (
    DEMO,
    MARKER,
    copy_run,
    edit_metrics,
    generate,
    table_rows,
    write_readme,
)

# ---------------------------------------------------------------- a temporary registry


def test_single_line_marker_default_grouping_oracle_and_a_view_row(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = registry / "results" / "demo"
    edit_metrics(demo / "clip4clip_seqTransf", **{"video/t2v_R1": 12.5, "video/t2v_R5": 40.0})
    marker = ("<!-- results-table: results/demo/* | columns: t2v_R1, t2v_R5, t2v_MdR | digits: 1 | label: run | "
              "rows: CLIP4Clip seqTransf; CLIP4Clip seqTransf@video = its video view; CLIP4Clip meanP = meanP | "
              "oracle: yes | bold: CLIP4Clip meanP -->")
    example = "```markdown\n<!-- results-table: results/nowhere | columns: t2v_R1 -->\n```\n"  # not a block
    readme = write_readme(registry, marker, intro=f"# demo\n\n{example}")
    assert generate(readme, capsys)[0] == 0
    rows = table_rows(readme)
    seq = json.loads((demo / "clip4clip_seqTransf" / "metrics.json").read_text())
    assert rows["run"] == ["t2v R@1", "t2v R@5", "t2v MdR"]
    assert rows["CLIP4Clip seqTransf"] == [f"{seq['metrics'][k]:.1f}" for k in ("t2v_R1", "t2v_R5", "t2v_MdR")]
    assert rows["its video view"] == ["12.5", "40.0", ""]  # a view records no MdR: blank
    assert all(c.startswith("**") and c.endswith("**") for c in rows["meanP"])
    assert list(rows)[1:4] == ["CLIP4Clip seqTransf", "its video view", "meanP"]  # the order of rows:
    oracle = seq["data"]["oracle"]
    assert rows["caption-consistent oracle (ceiling)"] == [f"{oracle['R@1']:.1f}", f"{oracle['R@5']:.1f}", ""]
    assert rows["chance"] == [f"{oracle['chance_R@1']:.1f}", "", ""]
    assert "results/nowhere" in readme.read_text() and "Generated from" not in readme.read_text()
    assert generate(readme, capsys, check=True)[0] == 0


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(("block", "message"), [
    ("<!-- results-table: results/missing\n     columns: t2v_R1 -->", "results/missing: no such file or folder"),
    ("<!-- results-table: results/study | columns: t2v_R1, narration/t2v_R1 -->",
     "column 'narration/t2v_R1': absent from"),
    ("<!-- results-table: results/study | columns: data -->", "holds a dict there, not a value"),
    ("<!-- results-table: results/study | group: (.*)_s\\d+$ | columns: t2v_R1 | rows: A_old; C_new -->",
     "rows: no group 'C_new'; the groups are: 'A_old'; 'B_new'"),
    ("<!-- results-table: results/study | group: ^B_ | columns: t2v_R1 -->", "does not match group '^B_'"),
    ("<!-- results-table: results/study | group: (unclosed | columns: t2v_R1 -->", "is not a valid regex"),
    ("<!-- results-table: results/study | colums: t2v_R1 -->", "unknown field 'colums: t2v_R1'"),
    ("<!-- results-table: results/study -->", "no `columns:` field"),
    ("<!-- results-table: | columns: t2v_R1 -->", "no results folder"),
    ("<!-- results-table: results/study | columns: t2v_R1 | digits: two -->", "digits: expected a whole number"),
    ("<!-- results-table: results/study | columns: t2v_R1 | columns: rsum -->", "field 'columns' given twice"),
    ("<!-- results-table: results/study | group: (.*)_s | columns: t2v_R1 | bold: C_new -->", "bold: no row 'C_new'"),
])
def test_errors_name_the_marker_line_and_the_problem(
        registry: Path, capsys: pytest.CaptureFixture[str], block: str, message: str) -> None:
    readme = write_readme(registry, block)
    before = readme.read_text()
    code, _, err = generate(readme, capsys)
    assert code == 2 and readme.read_text() == before
    assert f"{readme}:5: <!-- results-table:" in err and message in err, err


def test_a_missing_closing_marker_and_disagreeing_oracles_are_errors(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = registry / "README.md"
    readme.write_text("# x\n\n<!-- results-table: results/study | columns: t2v_R1 -->\n| stale |\n\n"
                      + MARKER + "\n<!-- /results-table -->\n")
    code, _, err = generate(readme, capsys, check=True)
    assert code == 2 and f"{readme}:3:" in err and "no closing `<!-- /results-table -->` before the next" in err

    record_path = registry / "results" / "study" / "B_new_s0" / "metrics.json"
    record = json.loads(record_path.read_text())
    record["data"]["oracle"]["R@1"] = 1.0
    record_path.write_text(json.dumps(record))
    readme = write_readme(registry, "<!-- results-table: results/study | columns: t2v_R1 | oracle: yes -->")
    code, _, err = generate(readme, capsys)
    assert code == 2 and "oracle: the runs record different data.oracle values" in err


# ---------------------------------------------------------------- the reproduction table


def test_a_column_can_read_another_json_file_of_the_test_folder(tmp_path: Path) -> None:
    study = tmp_path / "results" / "moe"
    copy_run(DEMO / "clip4clip_meanP", study / "a_s0")
    (study / "a_s0" / "expert_usage.json").write_text(json.dumps({"entropy_bits": 1.25}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results-table: results/moe | group: (.*)_s\\d+$ | "
                      "columns: expert_usage.entropy_bits = H, expert_usage.missing = M -->\n<!-- /results-table -->\n")
    assert main([str(readme)]) == 2  # a key in no file is still an error (a typo)
    readme.write_text(readme.read_text().replace(", expert_usage.missing = M", ""))
    assert main([str(readme)]) == 0
    assert "| a | 1.25 |" in readme.read_text()


def test_paper_column_from_the_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "results" / "demo"
    copy_run(DEMO / "clip4clip_meanP", study / "meanP_s0")
    copy_run(DEMO / "clip4clip_seqTransf", study / "seq_s0")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results-table: results/demo | group: (.*)_s\\d+$ | columns: t2v_R1 | "
                      "paper: seq = CLIP4Clip seqTransf -->\n<!-- /results-table -->\n")
    assert main([str(readme)]) == 0
    text = readme.read_text()
    assert "| group | t2v R@1 | paper t2v R@1 |" in text
    assert "| meanP | " in text and text.split("| meanP | ")[1].split("\n")[0].endswith("| — |")
    assert "| 44.5 (ViT-B/32, msrvtt 1k-A) |" in text  # CLIP4Clip Table 1 via NarVid's Table 1
    readme.write_text(readme.read_text().replace("CLIP4Clip seqTransf -->", "No Such Method -->"))
    assert main([str(readme)]) == 2
    assert "'No Such Method' has 0 t2v_R1 rows" in capsys.readouterr().err


def test_provenance_prints_every_runs_computed_leakage(tmp_path: Path) -> None:
    study = tmp_path / "results" / "leak"
    plain = copy_run(DEMO / "clip4clip_meanP", study / "plain_s0")
    leaky = copy_run(DEMO / "clip4clip_meanP", study / "leaky_s0")
    for run, leaks in ((plain, []), (leaky, ["the query saw its target"])):
        record = json.loads((run / "metrics.json").read_text())
        record.update(lineage={"node": "test"}, leakage=leaks, leakage_unverified=[])
        (run / "metrics.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    block = ("<!-- results-table: {} | group: (.*)_s\\d+$ | columns: t2v_R1 | provenance: yes -->\n"
             "<!-- /results-table -->\n")
    readme.write_text(block.format("results/leak/plain_s0"))
    assert main([str(readme)]) == 0
    assert "leakage none." in " ".join(readme.read_text().split())  # a clean verdict is printed too
    readme.write_text(block.format("results/leak"))
    assert main([str(readme)]) == 0
    text = " ".join(readme.read_text().split())
    assert "leakage the query saw its target (leaky) / none (plain)" in text


def test_provenance_names_uncommitted_changes_by_the_hash_of_their_diff(tmp_path: Path) -> None:
    """A run registered with --allow-dirty (git_dirty: true) says so in the provenance line; a clean run and a run
    that predates the field (no git_dirty) show the commit only."""
    study = tmp_path / "results" / "dirty"
    clean = copy_run(DEMO / "clip4clip_meanP", study / "clean_s0")
    dirty = copy_run(DEMO / "clip4clip_meanP", study / "dirty_s0")
    record = json.loads((clean / "metrics.json").read_text())
    (clean / "metrics.json").write_text(json.dumps({**record, "git_dirty": False}))
    (dirty / "metrics.json").write_text(json.dumps({**record, "git_dirty": True, "git_diff_sha256": "ab12cd34" * 8}))
    readme = tmp_path / "README.md"
    block = ("<!-- results-table: {} | group: (.*)_s\\d+$ | columns: t2v_R1 | provenance: yes -->\n"
             "<!-- /results-table -->\n")
    readme.write_text(block.format("results/dirty"))
    assert main([str(readme)]) == 0
    text = " ".join(readme.read_text().split())
    sha = record["git_sha"][:7]
    assert f"commit {sha} (clean) / {sha} + uncommitted changes (diff ab12cd34) (dirty)" in text
    readme.write_text(block.format("results/dirty/clean_s0"))
    assert main([str(readme)]) == 0
    assert "uncommitted" not in readme.read_text()


def test_provenance_names_the_data_copy_when_the_run_recorded_it(tmp_path: Path) -> None:
    """synthvtr-1.2 runs record their copy's content digest (``data.generator.content_sha256``); the line shows it,
    and says so when the copy's files did not match its manifest. Older runs keep their line as it was."""
    study = tmp_path / "results" / "copies"
    old = copy_run(DEMO / "clip4clip_meanP", study / "old_s0")
    same, changed = (copy_run(DEMO / "clip4clip_meanP", study / f"{n}_s0") for n in ("same", "changed"))
    for run, verified in ((same, True), (changed, False)):
        record = json.loads((run / "metrics.json").read_text())
        record["data"]["generator"].update({"version": "synthvtr-1.2", "content_sha256": "ab" * 32,
                                            "content_verified": verified})
        (run / "metrics.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    block = ("<!-- results-table: {} | group: (.*)_s\\d+$ | columns: t2v_R1 | provenance: yes -->\n"
             "<!-- /results-table -->\n")
    fingerprint = json.loads((old / "metrics.json").read_text())["data"]["generator"]["fingerprint"]
    readme.write_text(block.format("results/copies"))
    assert main([str(readme)]) == 0
    text = " ".join(readme.read_text().split())
    assert f"synthvtr (generator {fingerprint}) (old)" in text
    assert f"synthvtr (generator synthvtr-1.2 {fingerprint}, content {'ab' * 6}) (same)" in text
    assert f"content {'ab' * 6} (files differ from it)) (changed)" in text
