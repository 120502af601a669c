"""benchmarks.train_step (python -m benchmarks.train_step) runs at a tiny size and writes its JSON.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_helpers import run_benchmark


def test_train_step_covers_every_method_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "train_step.json"
    run_benchmark("-m", "benchmarks.train_step", "--steps", "1", "--batch", "4", "--captions", "3", "--json", str(out))
    record = json.loads(out.read_text())
    assert [r["method"] for r in record["rows"]] == [
        "CLIP4Clip meanP", "CLIP4Clip seqTransf", "NarVid (full)", "NarVid without CMI",
        "ExCae (ECS, routed experts)", "ExCae (ECS, all experts)", "ExCae without ECS (token mean)"]
    assert record["batch"] == 4 and "load_average_1min_before" in record
