"""The results registry: README tables generated from committed results (experiments/report/readme.py).

The first test is the registry check itself: README.md must equal what its results-table blocks generate from
results/. The others build a temporary README over copies of committed (registered, compact) runs.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest

from experiments.report.readme import main, wrap

ROOT = Path(__file__).resolve().parents[2]
CLIP_INIT = ROOT / "results" / "clip_init_synthvtr"
DEMO = ROOT / "results" / "demo"


def test_readme_tables_match_the_committed_results(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--check", str(ROOT / "README.md")])
    out = capsys.readouterr()
    assert code == 0, ("README.md tables differ from results/; run `python -m experiments.report.readme` and "
                       "commit README.md\n" + out.out + out.err)
    # the README keeps the leaderboard; the other tables moved into docs/ (tests/test_docs.py checks them)
    assert "<!-- leaderboard-table: results/leaderboard -->" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- a temporary registry
def copy_run(src: Path, dst: Path) -> Path:
    """A registered run's folder, and the study's test set file it names (its query ids live there)."""
    shutil.copytree(src, dst)
    test_set = json.loads((src / "metrics.json").read_text())["registry"]["test_set"]
    if test_set and not (dst.parent / test_set).exists():
        shutil.copy(src.parent / test_set, dst.parent / test_set)
    return dst


def edit_metrics(run: Path, **changes: object) -> None:
    path = run / "metrics.json"
    record = json.loads(path.read_text())
    record["metrics"].update(changes)
    path.write_text(json.dumps(record))


def r1(run: Path) -> float:
    return float(json.loads((run / "metrics.json").read_text())["metrics"]["t2v_R1"])


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """tmp/results/study: A_old seeds 0, 1 and B_new seed 0 of results/clip_init_synthvtr; tmp/results/demo."""
    for name in ("A_old_s0", "A_old_s1", "B_new_s0"):
        copy_run(CLIP_INIT / name, tmp_path / "results" / "study" / name)
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, tmp_path / "results" / "demo" / name)
    return tmp_path


MARKER = """<!-- results-table: results/study
     group: (.*)_s\\d+$
     columns: t2v_R1, t2v_R5 = R@5, seeds
     rows: A_old = before; B_new = after
     provenance: yes -->"""


def write_readme(root: Path, *blocks: str, intro: str = "# study\n\nSome text | with a pipe.\n") -> Path:
    readme = root / "README.md"
    readme.write_text(intro + "\n" + "\n\n".join(f"{b}\n<!-- /results-table -->" for b in blocks) + "\n\nEnd.\n")
    return readme


def run(readme: Path, capsys: pytest.CaptureFixture[str], check: bool = False) -> tuple[int, str, str]:
    code = main([*(["--check"] if check else []), str(readme)])
    out = capsys.readouterr()
    return code, out.out, out.err


def table_rows(readme: Path) -> dict[str, list[str]]:
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def test_check_fails_with_a_diff_naming_the_block_and_regenerate_fixes_it(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = write_readme(registry, MARKER)
    code, out, _ = run(readme, capsys, check=True)  # an empty block is stale
    assert code == 1 and f"stale: {readme}:5: <!-- results-table: results/study" in out
    assert run(readme, capsys)[0] == 0
    assert run(readme, capsys, check=True)[0] == 0
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
    code, out, _ = run(readme, capsys, check=True)
    assert code == 1 and readme.read_text() == before  # --check changes nothing
    assert f"--- {readme}:5: <!-- results-table: results/study" in out
    old_row = next(line for line in before.splitlines() if line.startswith("| before |"))
    new_mean = statistics.fmean([r1(study / "A_old_s0"), 50.0])
    assert f"-{old_row}" in out and f"+| before | {new_mean:.2f} ± " in out
    assert "1 of 1 generated block(s) stale" in out

    assert run(readme, capsys)[0] == 0
    assert table_rows(readme)["before"][0].startswith(f"{new_mean:.2f} ± ")
    assert run(readme, capsys, check=True)[0] == 0


def test_single_line_marker_default_grouping_oracle_and_a_view_row(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = registry / "results" / "demo"
    edit_metrics(demo / "clip4clip_seqTransf", **{"video/t2v_R1": 12.5, "video/t2v_R5": 40.0})
    marker = ("<!-- results-table: results/demo/* | columns: t2v_R1, t2v_R5, t2v_MdR | digits: 1 | label: run | "
              "rows: CLIP4Clip seqTransf; CLIP4Clip seqTransf@video = its video view; CLIP4Clip meanP = meanP | "
              "oracle: yes | bold: CLIP4Clip meanP -->")
    example = "```markdown\n<!-- results-table: results/nowhere | columns: t2v_R1 -->\n```\n"  # not a block
    readme = write_readme(registry, marker, intro=f"# demo\n\n{example}")
    assert run(readme, capsys)[0] == 0
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
    assert run(readme, capsys, check=True)[0] == 0


def test_provenance_wrap_never_starts_a_line_with_markdown_syntax() -> None:
    text = "word " * 30 + "- 1. # >quoted ==="
    lines = wrap(text, width=20)
    assert " ".join(lines) == text and len(lines) > 5
    assert not any(line.split()[0] in ("-", "1.", "#", "===") or line.startswith(">") for line in lines)


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
    code, _, err = run(readme, capsys)
    assert code == 2 and readme.read_text() == before
    assert f"{readme}:5: <!-- results-table:" in err and message in err, err


def test_a_missing_closing_marker_and_disagreeing_oracles_are_errors(
        registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = registry / "README.md"
    readme.write_text("# x\n\n<!-- results-table: results/study | columns: t2v_R1 -->\n| stale |\n\n"
                      + MARKER + "\n<!-- /results-table -->\n")
    code, _, err = run(readme, capsys, check=True)
    assert code == 2 and f"{readme}:3:" in err and "no closing `<!-- /results-table -->` before the next" in err

    record_path = registry / "results" / "study" / "B_new_s0" / "metrics.json"
    record = json.loads(record_path.read_text())
    record["data"]["oracle"]["R@1"] = 1.0
    record_path.write_text(json.dumps(record))
    readme = write_readme(registry, "<!-- results-table: results/study | columns: t2v_R1 | oracle: yes -->")
    code, _, err = run(readme, capsys)
    assert code == 2 and "oracle: the runs record different data.oracle values" in err


# ---------------------------------------------------------------- the reproduction table
def test_reproduction_table_from_results_and_paper_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "results" / "demo"
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, study / name)
    rows = ("- {method: meanP, dataset: SynthVTR, backbone: two-tower, command: '`make demo`', "
            "results: results/demo/clip4clip_meanP}\n"
            "- {method: NarVid, dataset: MSR-VTT, backbone: B/32, command: x, not_run: no GPU, "
            "paper: {method: NarVid, dataset: msrvtt, backbone: ViT-B/32, split: 1k-A}}\n")
    (tmp_path / "repro.yaml").write_text(rows)
    readme = tmp_path / "README.md"
    readme.write_text("# t\n\n<!-- reproduction-table: repro.yaml -->\n<!-- /reproduction-table -->\n")
    assert main([str(readme)]) == 0
    r1 = json.loads((DEMO / "clip4clip_meanP" / "metrics.json").read_text())["metrics"]["t2v_R1"]
    text = readme.read_text()
    assert f"| meanP | SynthVTR | two-tower | `make demo` | {r1:.2f} (seed 0; `results/demo/clip4clip_meanP`) | — |" \
        in text
    assert "| NarVid | MSR-VTT | B/32 | x | not run here (no GPU) | 51.0 |" in text  # NarVid Table 1, ViT-B/32
    assert main(["--check", str(readme)]) == 0
    capsys.readouterr()

    (tmp_path / "repro.yaml").write_text(rows.replace("split: 1k-A", "split: 7k"))
    assert main(["--check", str(readme)]) == 2
    assert "repro.yaml row 2: paper {" in capsys.readouterr().err
    (tmp_path / "repro.yaml").write_text(rows.replace("results/demo/clip4clip_meanP", "results/none"))
    assert main(["--check", str(readme)]) == 2
    assert "repro.yaml row 1" in capsys.readouterr().err


def test_json_table_from_its_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "results" / "benchmarks" / "step.json"
    bench.parent.mkdir(parents=True)
    bench.write_text(json.dumps({"benchmark": "benchmarks/train_step.py", "device": "cpu", "rows": [
        {"method": "A", "ms_median": 12.345}, {"method": "B | C", "ms_median": 1500.0}]}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- json-table: results/benchmarks/step.json\n     | columns: method, ms_median = ms -->\n"
                      "<!-- /json-table -->\n")
    assert main([str(readme)]) == 0
    text = readme.read_text()
    assert "| method | ms |\n|---|---|\n| A | 12.35 |\n| B \\| C | 1,500 |" in text
    assert "benchmark benchmarks/train_step.py; device cpu." in " ".join(text.split())  # wrapped
    assert main(["--check", str(readme)]) == 0
    bench.write_text(json.dumps({"rows": [{"method": "A"}]}))
    capsys.readouterr()
    assert main(["--check", str(readme)]) == 2
    assert "row 0 has no ['ms_median']" in capsys.readouterr().err


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
    assert main(["--check", str(readme)]) == 0


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
