"""The shared sections (experiments/results/sections.py): provenance columns, paired comparison, metric recheck."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments.report import main as report
from experiments.results.render import Table
from experiments.results.runs import Group, discover, group_runs
from experiments.results.sections import PROVENANCE, comparison_section, provenance, recheck
from experiments.results.stats import compare
from tests.report_helpers import _copy_run, table
from tests.run_helpers import REPO


def test_provenance_columns_are_filled_from_the_artifacts(built: dict) -> None:
    for row in table(built["md"], "Main table"):
        assert row["dataset"] == "msrvtt"
        assert row["backbone"] == "OpenCLIPBackbone vtr-tiny-clip"
        assert row["frames"] == "4" and row["devices"] == "1" and row["precision"] == "32-true"
        assert row["model selection"] == "4 held-out training videos"
        assert row["caption source"] == "none" and row["post-processing"] == "none" and row["leakage"] == "none"
        assert row["test set"].startswith("6 × 6, 1k-A")


def test_leakage_and_caption_flags_are_shown(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    record = json.loads((run / "test" / "metrics.json").read_text())
    record["leakage"] = ["test of X: model selection read 6 test videos [msrvtt/val]"]
    record["leakage_unverified"] = ["store.jsonl has no lineage record"]
    record["data"]["aux_captions"] = {"narration": "captions/narration_h0.5.jsonl"}
    record["data"]["caption_store"] = {"hallucination_rate": 0.5}
    (run / "test" / "metrics.json").write_text(json.dumps(record))
    legacy = _copy_run(runs, tmp_path / "legacy")
    old = json.loads((legacy / "test" / "metrics.json").read_text())
    del old["lineage"], old["leakage"], old["leakage_unverified"]
    old["data"] = record["data"]
    (legacy / "test" / "metrics.json").write_text(json.dumps(old))
    report([str(run), str(legacy), "--out", str(tmp_path / "out"), "--no-matrices"])
    (row,) = table((tmp_path / "out" / "report.md").read_text(), "Main table")  # one configuration, two runs
    assert row["leakage"] == ("test of X: model selection read 6 test videos [msrvtt/val] (unverified: store.jsonl has "
                              "no lineage record) / not computed (run predates lineage records)")
    assert row["caption source"] == "narration: captions/narration_h0.5.jsonl (hallucination 0.5)"


# ---------------------------------------------------------------- directly, on committed registered runs
def _demo(tmp_path: Path) -> Path:
    """A copy of results/demo (two registered runs and their test set) that a test may edit."""
    shutil.copytree(REPO / "results" / "demo", tmp_path / "demo")
    return tmp_path / "demo"


def test_provenance_of_a_group_joins_its_runs_distinct_values(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    for name, seed in (("clip4clip_meanP", 0), ("clip4clip_seqTransf", 1)):
        path = demo / name / "metrics.json"
        record = json.loads(path.read_text())
        record.update(seed=seed, precision="bf16-mixed" if seed else "32-true")
        path.write_text(json.dumps(record))
    runs, _ = discover([str(demo)])
    both = Group(("both",), sorted(runs, key=lambda r: r.seed or 0))
    assert provenance(both, "seeds") == "0,1"  # every seed, in order
    assert provenance(both, "precision") == "32-true / bf16-mixed"  # distinct values, in run order
    assert provenance(both, "backbone") == "PretrainedTwoTower dim 256"  # one value once
    assert provenance(both, "leakage") == "not computed (run predates lineage records)"
    assert provenance(both, "test set") == "800 × 160, all captions of the test videos"
    assert set(PROVENANCE) >= {"seeds", "backbone", "precision", "leakage", "test set"}


def test_comparison_section_rows_and_verdict(tmp_path: Path) -> None:
    runs, _ = discover([str(REPO / "results" / "demo")])
    a, b = group_runs(runs)
    result = compare(a, b, 300, 0)
    section = comparison_section([result], ["G1 and G3 were tested on different test sets: not compared."], 300)
    (tbl,) = [blk for blk in section.blocks if isinstance(blk, Table)]
    (row,) = tbl.rows
    assert row[:3] == [f"{a.ident} {a.label}", f"{b.ident} {b.label}", str(result.num_queries)]
    verdict = "A better" if result.pooled.low > 0 else "B better" if result.pooled.high < 0 else "not resolved"
    assert row[5] == result.pooled.text() and row[6] == verdict
    assert section.blocks[-1] == "G1 and G3 were tested on different test sets: not compared."
    assert "300 resamples" in str(section.blocks[0])
    empty = comparison_section([], [], 300)
    assert "No pair of groups to compare" in str(empty.blocks[1])


def test_recheck_finds_a_metric_that_its_ranks_do_not_give(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    (run,) = [r for r in discover([str(demo)])[0] if r.name == "clip4clip_meanP"]
    assert recheck(run) == []
    path = demo / "clip4clip_meanP" / "metrics.json"
    record = json.loads(path.read_text())
    true_r1 = record["metrics"]["t2v_R1"]
    record["metrics"]["t2v_R1"] = true_r1 + 1.0
    path.write_text(json.dumps(record))
    (edited,) = [r for r in discover([str(demo)])[0] if r.name == "clip4clip_meanP"]
    (note,) = recheck(edited)
    assert note == (f"{edited.path}: t2v_R1 recomputed from queries.npz is {true_r1:.4f}, metrics.json says "
                    f"{true_r1 + 1.0:.4f}.")
