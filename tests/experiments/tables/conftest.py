"""Fixtures of the generated-tables tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tables_helpers import CLIP_INIT, DEMO, copy_run


@pytest.fixture(autouse=True)
def repository_root(tmp_path: Path) -> Path:
    """Every test's ``tmp_path`` is a repository root (it holds ``pyproject.toml``): the generator resolves a block's
    paths against the root, whichever file holds the block, as in the real checkout."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = \"tables-test\"\n")
    return tmp_path


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """tmp/results/study: A_old seeds 0, 1 and B_new seed 0 of results/clip_init_synthvtr; tmp/results/demo."""
    for name in ("A_old_s0", "A_old_s1", "B_new_s0"):
        copy_run(CLIP_INIT / name, tmp_path / "results" / "study" / name)
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        copy_run(DEMO / name, tmp_path / "results" / "demo" / name)
    return tmp_path
