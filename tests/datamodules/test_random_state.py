"""The global random state (python, numpy, torch) is untouched by what a run builds before training."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.feature_cache import build_or_load_cache
from datamodules.random_state import GlobalRandomState, preserved_random_state
from lightning_modules.backbones import OpenCLIPBackbone
from tests.datamodules.test_feature_cache import make_dm


def _draw_from_every_generator() -> None:
    random.random()
    np.random.rand()
    torch.rand(1)


def test_preserved_random_state_restores_every_generator_also_on_error() -> None:
    torch.manual_seed(3)
    before = GlobalRandomState.capture()
    with preserved_random_state():
        _draw_from_every_generator()
        assert not GlobalRandomState.capture().equals(before)  # the draws did move each generator
    assert GlobalRandomState.capture().equals(before)
    with pytest.raises(RuntimeError, match="inside"), preserved_random_state():
        _draw_from_every_generator()
        raise RuntimeError("inside")
    assert GlobalRandomState.capture().equals(before)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    before.restore()
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_building_the_feature_cache_leaves_the_random_state_as_it_was(fake_msrvtt: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16, freeze_video=True,
                                freeze_text=True).eval()
    before = GlobalRandomState.capture()
    cache, _ = build_or_load_cache(make_dm(fake_msrvtt, tmp_path), backbone, torch.device("cpu"))  # cold: builds
    assert cache.has_video and GlobalRandomState.capture().equals(before)
    build_or_load_cache(make_dm(fake_msrvtt, tmp_path), backbone, torch.device("cpu"))  # warm: loads
    assert GlobalRandomState.capture().equals(before)


def test_generating_synthvtr_in_the_training_process_leaves_the_random_state_as_it_was(tmp_path: Path) -> None:
    from datamodules.synthvtr.datamodule import SynthVTR

    data = SynthVTR(root=str(tmp_path), num_families=3, family_size=2, test_families=1, val_families=1,
                    video_size=32, video_frames=8, generator_workers=1)  # renders in this process
    before = GlobalRandomState.capture()
    data.prepare_data()
    assert data.content_check().ok and GlobalRandomState.capture().equals(before)
