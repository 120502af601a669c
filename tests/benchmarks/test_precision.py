"""benchmarks.precision runs both precisions and the fp32 retest.

Only that the script runs and what it writes is checked; its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_helpers import run_benchmark


@pytest.mark.slow  # two fits and a test of the quickstart config through the CLI
def test_precision_benchmark_runs_both_precisions_and_the_retest(tmp_path: Path) -> None:
    out = tmp_path / "precision"
    run_benchmark(
        "-m", "benchmarks.precision", "--out", str(out), "--", "--data.init_args.root", str(tmp_path / "synthvtr"),
        "--data.init_args.num_families", "6", "--data.init_args.test_families", "2",
        "--data.init_args.val_families", "2", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1")
    summary = json.loads((out / "summary.json").read_text())
    assert {"fp32", "bf16", "bf16_retest_fp32"} <= set(summary) and "bf16_minus_retest_t2v_R1" in summary
