"""benchmarks.report: the fake runs it writes are what the comparison report reads, and the script runs.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.report import fake_run
from tests.benchmark_helpers import run_benchmark


def test_fake_run_metrics_are_those_of_its_matrix(tmp_path: Path) -> None:
    fake_run(tmp_path, "meanP_s0", "meanP", seed=0, size=12, signal=2.5)
    test = tmp_path / "meanP_s0" / "version_0" / "test"
    sim = np.load(test / "sim_t2v.npy")
    record = json.loads((test / "metrics.json").read_text())
    ranks = (sim >= np.diag(sim)[:, None]).sum(1)  # 1 + the videos scored at least as high as the right one
    assert record["metrics"]["t2v_R1"] == float(np.mean(ranks <= 1) * 100)
    assert record["num_texts"] == record["num_videos"] == 12 and record["seed"] == 0
    assert json.loads((test / "text_to_video.json").read_text()) == list(range(12))
    assert (tmp_path / "meanP_s0" / "version_0" / "metrics.csv").read_text().count("\n") == 1 + 30 * 11


def test_report_benchmark_runs_and_writes_the_report(tmp_path: Path) -> None:
    out = run_benchmark("-m", "benchmarks.report", "--runs", "2", "--size", "30", "--resamples", "50", "--keep",
                        str(tmp_path))
    assert out.splitlines()[-1].startswith("report on 2 runs of 30 x 30, 50 resamples:")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["meanP_s0", "seqTransf_s0"]
    assert any((tmp_path / "report").iterdir())
