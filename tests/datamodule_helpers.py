"""Pristine fake copies of every dataset layout, which a test copies before breaking one of its files.

``tests/datamodules/conftest.py`` makes the two fixtures available to every test of tests/datamodules/.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import make_fake_msrvtt
from tests.fake_datasets import make_fake_didemo, make_fake_msvd, make_fake_vatex

CopyOf = Callable[[str], Path]
SMALL = {"num_frames": 4, "image_size": 32, "num_workers": 0, "eval_batch_size": 2}


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fake copy of each layout, built once; tests copy the one they break (never this one)."""
    base = tmp_path_factory.mktemp("pristine")
    make_fake_msvd(base / "msvd")
    make_fake_vatex(base / "vatex")
    make_fake_didemo(base / "didemo")
    make_fake_msrvtt(base / "msrvtt", num_train=4, num_test=3, captions_per_video=2)
    return {p.name: p for p in base.iterdir()}


@pytest.fixture()
def copy_of(pristine: dict[str, Path], tmp_path: Path) -> CopyOf:
    def _copy(name: str) -> Path:
        return Path(shutil.copytree(pristine[name], tmp_path / name))

    return _copy
