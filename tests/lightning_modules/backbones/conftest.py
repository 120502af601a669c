"""The two-tower backbone with its packaged weights, built once per test module that asks for it."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.backbones import PretrainedTwoTower


@pytest.fixture(scope="module")
def two_tower() -> PretrainedTwoTower:
    torch.manual_seed(0)
    return PretrainedTwoTower(embed_dim=32, max_words=16, image_size=112)
