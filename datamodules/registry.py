"""Loads every data module, so that LightningCLI finds each by its short class name (``class_path: SynthVTR``).

jsonargparse resolves a short ``class_path`` among the *imported* subclasses of ``LightningDataModule``;
``datamodules`` loads its classes lazily (so that the torch-free generator ``datamodules.synthvtr`` stays
torch-free), hence ``main.py`` imports this module. A new data module is added here and to
``datamodules/__init__.py``.
"""

from __future__ import annotations

from datamodules import (
    MSRVTT,
    MSVD,
    VATEX,
    DiDeMo,
    PreferenceDataModule,
    SynthVTR,
    TrainVideoChunks,
    VideoFolder,
    VideoTextDataModule,
)

DATA_MODULES: tuple[type[VideoTextDataModule], ...] = (MSRVTT, MSVD, VATEX, DiDeMo, SynthVTR)
# one's own videos, for predict (captioning before a search index, experiments/search)
PREDICT_ONLY_DATA_MODULES = (VideoFolder,)
# wrap one of them: CaRe-DPO's preference pairs and the training-video chunks of its predict stages
# (datamodules/preferences.py)
WRAPPING_DATA_MODULES = (PreferenceDataModule, TrainVideoChunks)
