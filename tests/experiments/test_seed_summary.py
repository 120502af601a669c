"""``python -m experiments.seed_summary`` on the committed (compact) registry: its means are those of the runs'
metrics.json files."""

from __future__ import annotations

import json
import statistics

from experiments.seed_summary import collect, main
from tests.run_helpers import REPO

STUDY = REPO / "results" / "clip_init_synthvtr"


def test_seed_summary_reads_registered_runs() -> None:
    groups = collect([STUDY], r"(.*)_s\d+$")
    assert sorted(groups) == ["A_old", "B_new", "C_scale100_trunk"] and all(len(g) == 3 for g in groups.values())
    values = [json.loads((STUDY / f"A_old_s{s}" / "metrics.json").read_text())["metrics"]["t2v_R1"] for s in (0, 1, 2)]
    row = next(line for line in main([str(STUDY)]).splitlines() if line.startswith("| A_old |"))
    assert row.startswith(f"| A_old | 3 (0,1,2) | {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} |")
