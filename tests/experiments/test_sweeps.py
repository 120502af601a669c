"""Sweep files: W&B-valid shape, the local grid runner's expansion, and every run's command line parses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from experiments.sweep import command_for, expand_grid
from main import main
from tests.run_helpers import REPO

SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def test_expand_grid_and_command() -> None:
    sweep = {"program": "main.py", "method": "grid",
             "command": ["${env}", "${interpreter}", "${program}", "fit", "${args}"],
             "parameters": {"a.b": {"values": [1, 2]}, "c": {"value": True}, "d": {"values": ["x", "y", "z"]}}}
    grid = expand_grid(sweep)
    assert len(grid) == 6 and grid[0] == {"a.b": 1, "c": True, "d": "x"}
    cmd = command_for(sweep, grid[-1], ["--extra=1"])
    assert cmd[0] == sys.executable and cmd[1].endswith("main.py")
    assert cmd[2:] == ["fit", "--a.b=2", "--c=true", "--d=z", "--extra=1"]
    with pytest.raises(ValueError, match="grid only"):
        expand_grid({"method": "bayes", "parameters": {}})


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_runs_parse(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid" and "${args}" in sweep["command"] and sweep["metric"]["name"]
    grid = expand_grid(sweep)
    for params in grid:
        if "config" in params:
            assert (REPO / params["config"]).is_file(), params["config"]
    cmd = command_for(sweep, grid[-1], [])
    subcommand_at = cmd.index("fit")
    with pytest.raises(SystemExit) as exit_info:
        main([*cmd[subcommand_at:], "--print_config"])
    assert exit_info.value.code == 0
    capsys.readouterr()
