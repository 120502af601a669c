"""``--wandb`` (experiments/report/wandb_log.py) on the report of real runs, offline into a temporary WANDB_DIR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from experiments.report import main as report
from tests.report_helpers import offline_wandb, table, wandb_records


@pytest.fixture
def runs(synthvtr_runs: Path) -> Path:
    """CLIP4Clip meanP and seqTransf (seed 0) on a default-like and a hard SynthVTR configuration (conftest)."""
    return synthvtr_runs


def test_wandb_logs_tables_per_query_results_and_the_report_artifact(runs: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    offline_wandb(tmp_path, monkeypatch)
    out = tmp_path / "rep"
    report([str(runs), "--out", str(out), "--resamples", "300", "--queries", "2", "--wandb"])
    (run_dir,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*")
    names = {p: re.fullmatch(r"(.+)_(\d+)_[0-9a-f]+\.table\.json", p.name) for p in
             (run_dir / "files" / "media" / "table").iterdir()}
    assert all(names.values()), names  # <key>_<step>_<hash>.table.json
    tables = {m.group(1): json.loads(p.read_text()) for p, m in names.items() if m}
    assert {"main_table", "paired_comparison", "robustness", "per_query"} <= set(tables)
    main_table = tables["main_table"]
    assert main_table["columns"][:3] == ["group", "method", "dataset"] and len(main_table["data"]) == 4
    md_rows = table((out / "report.md").read_text(), "Main table")
    assert [r[0] for r in main_table["data"]] == [r["group"] for r in md_rows]
    assert [r[5] for r in main_table["data"]] == [r["T2V R@1"] for r in md_rows]
    assert len(tables["paired_comparison"]["data"]) == 2 and tables["robustness"]["columns"][0] == "configuration"
    per_query = tables["per_query"]
    assert per_query["columns"] == ["group", "method", "dataset", "seed", "run", "query_id", "query_text",
                                    "gt_video_id", "gt_rank", "top5_video_ids"]
    assert len(per_query["data"]) == 4 * 30  # 4 runs x 30 test queries
    for row in per_query["data"]:
        group, text, gt_video, rank, top5 = row[0], row[6], row[7], row[8], row[9].split(", ")
        assert text and text.strip() and gt_video.startswith("synth") and len(top5) == 5
        assert (rank == 1) == (top5[0] == gt_video) and 1 <= rank <= 6 and group.startswith("G")
    # ranks agree with the run's own matrix
    run = Path(per_query["data"][0][4])
    sim = np.load(run / "test" / "sim_t2v.npy")
    gt = json.loads((run / "test" / "text_to_video.json").read_text())
    ranks = (sim >= sim[np.arange(len(gt)), gt][:, None]).sum(axis=1)
    assert [r[8] for r in per_query["data"] if r[4] == str(run)] == ranks.tolist()
    # the report folder as an artifact of type "report", in the run's transaction log
    (log,) = run_dir.glob("run-*.wandb")
    artifacts = [r.artifact for r in wandb_records(log) if r.WhichOneof("record_type") == "artifact"]
    (artifact,) = [a for a in artifacts if a.type == "report"]
    assert artifact.name == "report-rep"
    paths = {e.path for e in artifact.manifest.contents}
    assert {"report.md", "index.html"} <= paths
    assert any(p.startswith("plots/") for p in paths) and any(p.startswith("thumbs/") for p in paths)
    expected = {f"plots/{p.name}" for p in (out / "plots").iterdir()} | {
        f"thumbs/{p.name}" for p in (out / "thumbs").iterdir()}
    assert expected <= paths
