"""benchmarks.excae_eval runs every way at a tiny size.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_helpers import assert_machine_fields, run_benchmark


def test_excae_eval_benchmark_runs_every_way(tmp_path: Path) -> None:
    out = tmp_path / "excae_eval.json"
    run_benchmark("-m", "benchmarks.excae_eval", "--videos", "12", "--texts", "12", "--captions", "3", "--frames", "4",
         "--batch", "5", "--backbone", "vtr-tiny-clip", "--experts", "6", "--expert-heads", "2", "--expert-ffn", "16",
         "--repeats", "1", "--json", str(out))
    record = json.loads(out.read_text())
    rows = {r["way"]: r for r in record["rows"]}
    assert len(rows) == 4 and all(r["topk_max_abs_diff"] <= 1e-5 for r in rows.values())
    assert [r["views"] for r in record["rows"]] == ["topk", "topk", "dense + topk", "topk"]
    assert_machine_fields(record)
