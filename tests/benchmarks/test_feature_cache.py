"""benchmarks.feature_cache runs every mode (end-to-end, cached cold, cached warm).

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_helpers import run_benchmark


@pytest.mark.slow  # three fits of the quickstart config through the CLI (~40 s of CPU at 6 families)
def test_feature_cache_benchmark_runs_every_mode(tmp_path: Path) -> None:
    out = run_benchmark("-m", "benchmarks.feature_cache", "--data", str(tmp_path / "synthvtr"), "--families", "6",
               "--epochs", "1", "--workers", "0")
    assert [line.split(" | ")[0] for line in out.splitlines() if line.startswith("| ")][1:] == [
        "| end-to-end", "| cached-cold", "| cached-warm"]
