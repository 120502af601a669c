"""Runs a benchmark script as its README says (``python -m benchmarks.<name>``) for the tests of tests/benchmarks/.

Only that the scripts run and what they write is checked; their timings are never asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from tests.run_helpers import REPO

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def run_benchmark(*args: str) -> str:
    """Run ``python *args`` from the repository root; its stdout, or a failure showing the end of its output."""
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def assert_machine_fields(record: dict[str, Any]) -> None:
    """The machine facts every timing JSON records (benchmarks/machine.py)."""
    assert record["machine_state"] in ("idle", "shared") and "load_average_1min_before" in record
    assert record["cpus"] >= 1 and record["device"] == "cpu"
