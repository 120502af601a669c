"""The suite cleans up after itself: a passing test's folder is removed when it ends, a failing test's is kept.

Without this, one ``make test`` left ~15 GB of checkpoints in ``/tmp`` (the shipped-config runs save two checkpoints
of the embedded backbone each) and pytest keeps the folders of the last three runs, so a few runs filled a CI disk.
The rule lives in ``pyproject.toml`` (``tmp_path_retention_policy``); this test runs a small session under that very
file and looks at what is left.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.run_helpers import REPO

SESSION = '''
def test_passes(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"0" * 1024)

def test_fails(tmp_path):
    (tmp_path / "evidence.txt").write_text("read me")
    assert False, "fails on purpose"
'''


def test_a_passing_tests_folder_is_removed_and_a_failing_tests_folder_is_kept(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_probe.py").write_text(SESSION)
    basetemp = tmp_path / "basetemp"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(REPO / "pyproject.toml"), "--rootdir", str(suite), "--basetemp", str(basetemp),
                           "-m", "", str(suite / "test_probe.py")],
                          capture_output=True, text=True, cwd=suite, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout, done.stdout
    left = sorted(p.name for p in basetemp.iterdir() if not p.is_symlink())  # pytest adds "<name>current" links
    assert not any(name.startswith("test_passes") for name in left), f"a passing test's folder was kept: {left}"
    kept = [basetemp / name for name in left if name.startswith("test_fails")]
    assert len(kept) == 1 and (kept[0] / "evidence.txt").read_text() == "read me", left
