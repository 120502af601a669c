"""Finding, loading and grouping runs (experiments/results/runs.py): real run folders from the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.report import main as report
from experiments.results.errors import ReportError
from experiments.results.runs import load_run, split_retests
from tests.report_helpers import _copy_run


@pytest.fixture
def runs(clip4clip_runs: Path) -> Path:
    return clip4clip_runs


def test_empty_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty: no run found \(no test/metrics.json"):
        report([str(empty), "--out", str(tmp_path / "out")])
    with pytest.raises(ReportError, match="matches nothing"):
        report([str(tmp_path / "nothing_*"), "--out", str(tmp_path / "out")])


def test_malformed_metrics_json_is_an_error_naming_the_file(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    bad = run / "test" / "metrics.json"
    bad.write_text('{"metrics": {"t2v_R1": ')
    with pytest.raises(ReportError, match=rf"{re.escape(str(bad))}: cannot read the test metrics .*main.py test"):
        report([str(run.parent), "--out", str(tmp_path / "out")])
    bad.write_text(json.dumps({"metrics": {"t2v_R1": 1.0}}))
    with pytest.raises(ReportError, match=rf"{re.escape(str(bad))}: 'metrics' lacks numeric t2v_R5"):
        report([str(run.parent), "--out", str(tmp_path / "out")])


def test_sim_matrix_that_disagrees_with_the_ids_is_an_error(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    np.save(run / "test" / "sim_t2v.npy", np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(ReportError, match=r"sim_t2v.npy: shape \(5, 6\) disagrees with text_ids.json \(6 texts\)"):
        report([str(run), "--out", str(tmp_path / "out")])


def test_a_resumed_fit_and_a_test_of_a_foreign_checkpoint_stay_runs(runs: Path, tmp_path: Path) -> None:
    resumed = _copy_run(runs, tmp_path)  # a fit resumed with --ckpt_path: ckpt_path set, training rows logged
    config = yaml.safe_load((resumed / "test" / "config.yaml").read_text())
    config["ckpt_path"] = str(resumed / "checkpoints" / "last.ckpt")
    (resumed / "test" / "config.yaml").write_text(yaml.safe_dump(config))
    foreign = tmp_path / "foreign" / "version_0"  # test-only run of a checkpoint whose training run is elsewhere
    shutil.copytree(resumed, foreign)
    (foreign / "metrics.csv").write_text("epoch,step,test/t2v_R1\n0,0,10.0\n")
    config["ckpt_path"] = "/elsewhere/run/version_3/checkpoints/best.ckpt"
    (foreign / "test" / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = [load_run(resumed / "test" / "metrics.json"), load_run(foreign / "test" / "metrics.json")]
    kept, retests = split_retests(loaded)
    assert [r.path for r in kept] == [resumed, foreign] and retests == []
