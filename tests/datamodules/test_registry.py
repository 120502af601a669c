"""``datamodules.registry`` loads every data module that ``datamodules`` exports (LightningCLI's short names)."""

from __future__ import annotations

import inspect

import datamodules
from datamodules.base import VideoTextDataModule
from datamodules.registry import DATA_MODULES, PREDICT_ONLY_DATA_MODULES


def test_registry_lists_every_exported_data_module():
    exported = {getattr(datamodules, name) for name in datamodules.__all__}
    data_modules = {c for c in exported if inspect.isclass(c) and issubclass(c, VideoTextDataModule)
                    and c is not VideoTextDataModule}
    assert set(DATA_MODULES) | set(PREDICT_ONLY_DATA_MODULES) == data_modules
