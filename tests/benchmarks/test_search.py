"""benchmarks.search runs at a tiny size.

``--part indexing`` needs a trained checkpoint and runs in
``tests/experiments/test_search.py::test_indexing_benchmark_runs``, beside the checkpoint its fixture trains.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_helpers import run_benchmark


def test_search_vector_benchmark_runs_every_index_type(tmp_path: Path) -> None:
    out = tmp_path / "search_vectors.json"
    run_benchmark(
        "-m", "benchmarks.search", "--part", "vectors", "--sizes", "3000", "--cluster-size", "50", "--queries", "10",
        "--nprobe", "4", "8", "--ef-search", "16", "--threads", "1", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["index"].split()[0] for r in rows] == ["flat", "ivf", "ivf", "hnsw"]
    assert rows[0]["recall_at_10"] == 1.0 and all(0.0 <= r["recall_at_10"] <= 1.0 for r in rows)
