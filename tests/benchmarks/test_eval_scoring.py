"""benchmarks.eval_scoring runs at a tiny size and times every scoring variant it names.

Only that the script runs and what it prints is checked; its timings are never asserted.
"""

from __future__ import annotations

from tests.benchmark_helpers import run_benchmark


def test_eval_scoring_benchmark_runs_every_variant() -> None:
    # --narvid adds NarVid's two views to the default variants: both modes in one run
    out = run_benchmark("-m", "benchmarks.eval_scoring", "--texts", "20", "--videos", "10", "--frames", "4", "--words",
                        "8", "--dim", "16", "--chunks", "8", "--repeats", "1", "--narvid")
    table = [line.split(" | ")[:2] for line in out.splitlines() if line.startswith("| ")][1:]
    assert table == [["| coarse", "naive"], ["| coarse", "chunked"], ["| fine", "naive"], ["| fine", "chunked"],
                     ["| narvid", "per-query loop"], ["| narvid", "chunked"]]
