"""``python -m experiments.seed_summary`` (experiments/seed_summary.py) on the committed (compact) registry: its
means are those of the runs' metrics.json files, and ``results/clip_init_synthvtr/summary.md`` is its output."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.seed_summary import METRICS, collect, main, run_name
from tests.run_helpers import REPO

STUDY = REPO / "results" / "clip_init_synthvtr"


def test_seed_summary_reads_registered_runs() -> None:
    groups = collect([STUDY], r"(.*)_s\d+$")
    assert sorted(groups) == ["A_old", "B_new", "C_scale100_trunk"] and all(len(g) == 3 for g in groups.values())
    for group in groups:
        records = [json.loads((STUDY / f"{group}_s{s}" / "metrics.json").read_text()) for s in (0, 1, 2)]
        cells = []
        for key in METRICS:
            values = [r["metrics"][key] for r in records]
            cells.append(f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}")
        row = next(line for line in main([str(STUDY)]).splitlines() if line.startswith(f"| {group} |"))
        assert row == f"| {group} | 3 (0,1,2) | " + " | ".join(cells) + " |"


def test_the_committed_summary_is_its_output() -> None:
    assert (STUDY / "summary.md").read_text().strip() == main([str(STUDY)]).strip()


def test_run_names_of_each_layout() -> None:
    assert run_name(Path("s/narvid_s0/version_3/test/metrics.json")) == "narvid_s0"
    assert run_name(Path("s/narvid_s0/test/metrics.json")) == "narvid_s0"
    assert run_name(Path("results/s/narvid_s0/metrics.json")) == "narvid_s0"


def test_one_seed_has_no_spread_and_bad_input_names_the_file(tmp_path: Path) -> None:
    shutil.copytree(STUDY / "A_old_s0", tmp_path / "A_old_s0")
    (row,) = [line for line in main([str(tmp_path)]).splitlines() if line.startswith("| A_old |")]
    assert "±" not in row and row.startswith("| A_old | 1 (0) | ")
    with pytest.raises(ValueError, match=r"A_old_s0/metrics.json: run name 'A_old_s0' does not match --group"):
        collect([tmp_path], r"^B_")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'empty'}: no test/metrics.json"):
        (tmp_path / "empty").mkdir()
        collect([tmp_path / "empty"], r"(.*)")
    broken = tmp_path / "runs" / "x_s0" / "test" / "metrics.json"  # a run folder's record, cut short
    broken.parent.mkdir(parents=True)
    broken.write_text('{"metrics": ')
    done = subprocess.run([sys.executable, "-m", "experiments.seed_summary", str(broken.parents[2])], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {broken}: not valid JSON"), done.stderr
