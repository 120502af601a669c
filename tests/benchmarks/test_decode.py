"""benchmarks.decode runs every reader and source at a tiny size.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

from pathlib import Path

from tests.benchmark_helpers import run_benchmark


def test_decode_benchmark_runs_every_reader_and_source(tmp_path: Path) -> None:
    out = run_benchmark(
        "-m", "benchmarks.decode", "--data", str(tmp_path / "clips"), "--clips", "2", "--seconds", "1", "--fps",
        "4", "--workers", "0", "--passes", "1", "--num-frames", "2", "--image-size", "32")
    lines = out.splitlines()
    table = lines[lines.index("| reader | source | workers | clips/s (best) | clips/s (mean) |") + 2:]
    rows = [line.split(" | ")[:2] for line in table if line.startswith("| ")]
    assert rows == [["| decord", "original"], ["| pyav", "original"], ["| decord", "3fps-224"],
                    ["| pyav", "3fps-224"], ["| frames", "frames"]]
