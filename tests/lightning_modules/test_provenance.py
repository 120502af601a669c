"""Provenance: the code state (commit, uncommitted changes) and the arithmetic environment every run records."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_modules import provenance
from lightning_modules.provenance import environment, git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def _repo(path: Path) -> Path:
    """A one-commit git repository with a tracked file and an ignored folder."""
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (path / "method.py").write_text("SCALE = 1\n")
    (path / ".gitignore").write_text("/runs/\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *args], cwd=path, check=True, env=env, capture_output=True)
    return path


def test_clean_dirty_and_untracked_trees(tmp_path: Path) -> None:
    """Clean: no hash; an edited tracked file or an untracked, non-ignored file: dirty, with a hash of the diff and
    the untracked files' content (ignored outputs do not count)."""
    repo = _repo(tmp_path / "repo")
    clean = git_state(repo)
    assert clean["git_dirty"] is False and clean["git_diff_sha256"] is None and len(clean["git_sha"]) == 40
    (repo / "runs").mkdir()
    (repo / "runs" / "metrics.json").write_text("{}")  # ignored output: still clean
    assert git_state(repo) == clean

    (repo / "method.py").write_text("SCALE = 2\n")  # an uncommitted method change
    edited = git_state(repo)
    assert edited["git_dirty"] is True and edited["git_sha"] == clean["git_sha"]
    assert len(edited["git_diff_sha256"]) == 64 and git_state(repo) == edited  # the same state, the same hash
    (repo / "method.py").write_text("SCALE = 3\n")
    assert git_state(repo)["git_diff_sha256"] != edited["git_diff_sha256"]

    (repo / "method.py").write_text("SCALE = 1\n")
    (repo / "new_method.py").write_text("A = 1\n")  # untracked, not ignored: its content is part of the hash
    untracked = git_state(repo)
    assert untracked["git_dirty"] is True
    (repo / "new_method.py").write_text("A = 2\n")
    assert git_state(repo)["git_diff_sha256"] not in (None, untracked["git_diff_sha256"])
    (repo / "new_method.py").unlink()
    (repo / "venv-link").symlink_to(tmp_path)  # a link is hashed as the link, not followed
    assert git_state(repo)["git_dirty"] is True



def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("vtr")
    except importlib.metadata.PackageNotFoundError:
        return None


def test_outside_a_checkout_nothing_is_guessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a checkout above tmp_path
    (tmp_path / "installed").mkdir()
    assert git_state(tmp_path / "installed") == {
        "source": "not a git checkout", "installed_version": _installed_version(), "git_sha": "unknown",
        "git_dirty": None, "git_diff_sha256": None}


def test_an_installed_copy_inside_another_repository_records_none_of_its_state(tmp_path: Path) -> None:
    """A virtual environment inside a project's checkout: the project's commit and diff are not this code's."""
    project = _repo(tmp_path / "project")
    site = project / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    state = git_state(site)
    assert state["source"] == "not a git checkout" and state["git_sha"] == "unknown" and state["git_dirty"] is None
    assert git_state(project)["source"] == "git checkout"  # the project itself is one


def test_source_state_of_an_installed_copy(tmp_path: Path) -> None:
    """``source_state`` imported from a folder that is no git checkout (as from a wheel in site-packages) records
    that, and the installed distribution's version, instead of failing or claiming a clean tree."""
    site = tmp_path / "site-packages"
    (site / "lightning_modules").mkdir(parents=True)
    (site / "lightning_modules" / "__init__.py").write_text("")
    shutil.copy(Path(provenance.__file__), site / "lightning_modules" / "provenance.py")
    env = {**os.environ, "PYTHONPATH": str(site), "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    code = ("import json; from lightning_modules import provenance as p; "
            "print(json.dumps([p.__file__, p.source_state()]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    where, state = json.loads(out.stdout)
    assert Path(where).parent.parent == site  # the copy ran, not the checkout's module
    assert state == {"source": "not a git checkout", "installed_version": _installed_version(), "git_sha": "unknown",
                     "git_dirty": None, "git_diff_sha256": None}


def test_environment_names_what_decides_the_arithmetic() -> None:
    env = environment()
    assert env["torch"] == torch.__version__ and env["cpu"]["model"]
    assert env["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}
    assert {"blas_info", "lapack_info", "numpy"} <= set(env["blas"])
    assert env["deterministic"]["algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert env["gpu"] is None  # no trainer on a GPU
    if Path("/proc/cpuinfo").is_file() and " avx2 " in Path("/proc/cpuinfo").read_text():
        assert "avx2" in env["cpu"]["isa"]
    json.dumps(env)  # goes into metrics.json as it is


def test_a_run_from_a_dirty_tree_records_it(tmp_path: Path, fake_msrvtt: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``metrics.json`` records the code state the process started from (here a dirty stand-in checkout)."""
    from main import main
    from tests.run_helpers import TINY_CLIP4CLIP, csv_logger

    repo = _repo(tmp_path / "repo")
    (repo / "method.py").write_text("SCALE = 2\n")
    dirty = git_state(repo)
    monkeypatch.setattr(provenance, "source_state", lambda: dirty)
    cli = main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                "--trainer.logger", csv_logger(tmp_path, "dirty")])
    record = json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())
    assert {k: record[k] for k in dirty} == dirty and record["git_dirty"] is True
    assert record["environment"]["torch_threads"]["intra_op"] >= 1 and record["environment"]["cpu"]["isa"] is not None
