"""``vtr.command``: the ``vtr`` console command's dispatch (usage, version, configs, module subcommands, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtr import command
from vtr.command import LIGHTNING_SUBCOMMANDS, MODULE_SUBCOMMANDS, ModuleCommand, main
from vtr.resources import configs_dir, shipped_configs


def test_usage_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in (*LIGHTNING_SUBCOMMANDS, *MODULE_SUBCOMMANDS, "configs"):
        assert f"  {name} " in out, name
    assert main([]) == 2  # no subcommand: the usage on stderr, a usage error
    assert "usage: vtr <subcommand>" in capsys.readouterr().err


def test_an_unknown_subcommand_is_a_usage_error_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown subcommand 'trian'" in err and "fit" in err


def test_configs_path_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs", "path"]) == 0
    assert Path(capsys.readouterr().out.strip()) == configs_dir()
    assert main(["configs", "list"]) == 0
    assert capsys.readouterr().out.split() == shipped_configs()
    assert main(["configs", "where"]) == 2
    assert "expected one of path, list" in capsys.readouterr().err


def test_version_is_the_installed_distributions_or_says_it_is_not_installed(capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("vtr ") and len(out) > len("vtr ")


def test_a_module_subcommand_runs_the_module_with_its_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """``vtr prepare --help`` is ``python -m experiments.prepare --help``: the module's own argument parser."""
    assert main(["prepare", "--help"]) == 0
    assert "experiments.prepare" in capsys.readouterr().out


def test_a_subcommand_whose_module_is_absent_says_so(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(command.MODULE_SUBCOMMANDS, "ghost", ModuleCommand("experiments.no_such_module", "absent"))
    assert main(["ghost", "x"]) == 2
    assert "its module experiments.no_such_module is not part of this installation" in capsys.readouterr().err


def test_a_module_exiting_with_a_message_returns_1(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``sys.exit("message")`` in a module: the message on stderr and status 1, as the interpreter does."""
    monkeypatch.setitem(command.MODULE_SUBCOMMANDS, "exits", ModuleCommand("tests.vtr.exiting_module", "exits"))
    assert main(["exits", "--why", "because"]) == 1
    assert "exiting: ['--why', 'because']" in capsys.readouterr().err
