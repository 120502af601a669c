"""benchmarks.process_memory: the process's peak resident set size."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.process_memory import peak_rss_mib
from tests.run_helpers import REPO

# a fresh interpreter, whose peak is far below that of the test process: touching 64 MiB must raise it
GROW = """
from benchmarks.process_memory import peak_rss_mib
before = peak_rss_mib()
block = bytearray(64 * 1024 * 1024)
block[::4096] = bytes(len(block[::4096]))
print(before, peak_rss_mib())
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_peak_rss_grows_with_a_large_allocation() -> None:
    done = subprocess.run([sys.executable, "-c", GROW], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = map(float, done.stdout.split())
    assert 0 < before and after >= before + 60


def test_nan_where_proc_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "is_file", lambda self: False)
    assert math.isnan(peak_rss_mib())
