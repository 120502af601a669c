"""benchmarks.per_candidate runs at a tiny size and its naive and chunked variants agree.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_helpers import run_benchmark


def test_per_candidate_benchmark_runs_and_its_variants_agree(tmp_path: Path) -> None:
    out = tmp_path / "per_candidate.json"
    run_benchmark("-m", "benchmarks.per_candidate", "--texts", "12", "--videos", "9", "--dim", "8", "--chunk", "5",
         "--concat-pairs", "4", "--batch", "2", "--text-backbone", "vtr-tiny-clip", "--json", str(out))
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"sum_naive", "sum_chunked", "gate_naive", "gate_chunked", "concat_naive", "concat_chunked"}
    for fusion in ("sum", "gate"):  # the module's tiled path scores exactly what the all-at-once tensor scores
        assert abs(rows[f"{fusion}_naive"]["checksum"] - rows[f"{fusion}_chunked"]["checksum"]) < 1e-3
    assert rows["concat_chunked"]["extrapolated"] and rows["concat_chunked"]["pairs_timed"] == 4
