"""The command line, in-process and as ``python -m datamodules.synthvtr``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from datamodules.synthvtr.cli import main
from tests.run_helpers import REPO


def test_cli_specs_only(capsys: pytest.CaptureFixture[str]):
    assert main(["--specs-only", "--num-families", "6", "--test-families", "2",
                 "--mutations", "colour,background"]) == 0
    out = capsys.readouterr().out
    assert "24 videos" in out and "oracle" in out


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "datamodules.synthvtr", "--specs-only", "--num-families", "4",
                           "--test-families", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "16 videos" in done.stdout and "no files written" in done.stdout
