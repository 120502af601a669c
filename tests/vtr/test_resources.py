"""``vtr.resources``: a config named as in the checkout is read from the shipped copy when the current directory has
none, and only then; the shipped folders and the wheel's build step agree."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vtr import resources
from vtr.resources import CONFIG_SUFFIXES, resolve_config_args, shipped, shipped_configs

REPO = Path(__file__).resolve().parents[2]


def test_setup_py_and_vtr_resources_ship_the_same_kinds_of_config() -> None:
    setup = ast.parse((REPO / "setup.py").read_text())
    suffixes = next(ast.literal_eval(node.value) for node in ast.walk(setup) if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "SUFFIXES" for t in node.targets))
    assert suffixes == CONFIG_SUFFIXES


def test_a_config_missing_here_is_read_from_the_shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here
    monkeypatch.setattr(resources, "_NOTED", set())
    out = resolve_config_args(["fit", "--config", "configs/quickstart.yaml", "--config=configs/quickstart.yaml",
                               "-c", "configs/quickstart.yaml", "--trainer.max_epochs", "1"])
    found = str(shipped("configs/quickstart.yaml"))
    assert out == ["fit", "--config", found, f"--config={found}", "-c", found, "--trainer.max_epochs", "1"]
    assert Path(found).is_file() and Path(found).read_text() == (REPO / "configs" / "quickstart.yaml").read_text()
    assert capsys.readouterr().err.count("reading the shipped") == 1  # said once per path


def test_a_local_file_wins_and_unknown_paths_stay_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("seed_everything: 3\n")
    assert resolve_config_args(["--config", "configs/quickstart.yaml"]) == ["--config", "configs/quickstart.yaml"]
    # no shipped file of that name, absolute or climbing paths: the command's own error names the path as written
    for path in ("configs/nope.yaml", "../configs/quickstart.yaml", str(tmp_path / "x.yaml")):
        assert resolve_config_args(["--config", path]) == ["--config", path]
    assert shipped("results/README.md") is None  # outside the shipped folders


def test_shipped_configs_lists_every_config_but_local_ones() -> None:
    listed = shipped_configs()
    assert "configs/quickstart.yaml" in listed and listed == sorted(listed)
    assert not any(p.startswith("configs/local/") for p in listed)
    assert all(Path(p).suffix in CONFIG_SUFFIXES for p in listed)
