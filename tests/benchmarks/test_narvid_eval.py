"""benchmarks.narvid_eval runs at a tiny size: both ways score the same matrix.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_helpers import assert_machine_fields, run_benchmark


def test_narvid_eval_benchmark_scores_the_same_matrix_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "narvid_eval.json"
    run_benchmark("-m", "benchmarks.narvid_eval", "--texts", "24", "--videos", "10", "--frames", "4", "--words", "12",
         "--query-tokens", "5", "--backbone", "vtr-tiny-clip", "--temporal-layers", "1", "--text-chunk", "8",
         "--video-chunk", "6", "--repeats", "2", "--json", str(out), "--machine-state", "shared")
    record = json.loads(out.read_text())
    assert record["bitwise_identical"] and record["metrics_identical"] and record["queries_same_ranking"] == 24
    assert [r["way"].split(" (")[0].split(":")[0] for r in record["rows"]] == [
        "every word slot", "packed queries", "GEMM floor", "GEMM floor"]
    assert record["rows"][0]["checksum"] == record["rows"][1]["checksum"]
    assert record["real_word_slots"] < 24 * 12 and record["machine_state"] == "shared"
    assert_machine_fields(record)
