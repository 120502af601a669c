"""Data modules for text-video retrieval benchmarks.

The classes load on first access (PEP 562 module ``__getattr__``), so importing a torch-free part of the
package (``datamodules.synthvtr``, the SynthVTR generator and its render workers) does not import torch.
``datamodules/registry.py`` loads them all, which registers every data module for LightningCLI's short
class names (``class_path: SynthVTR``; ``main.py`` imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamodules.base import VideoTextDataModule
    from datamodules.captions import CaptionRecord, CaptionStore
    from datamodules.didemo import DiDeMo
    from datamodules.folder import VideoFolder
    from datamodules.msrvtt import MSRVTT
    from datamodules.msvd import MSVD
    from datamodules.preferences import PreferenceDataModule, TrainVideoChunks
    from datamodules.synthvtr.datamodule import SynthVTR
    from datamodules.vatex import VATEX

# public name -> the module that defines it
_DEFINED_IN: dict[str, str] = {
    "VideoTextDataModule": "datamodules.base",
    "CaptionRecord": "datamodules.captions",
    "CaptionStore": "datamodules.captions",
    "DiDeMo": "datamodules.didemo",
    "MSRVTT": "datamodules.msrvtt",
    "MSVD": "datamodules.msvd",
    "PreferenceDataModule": "datamodules.preferences",
    "SynthVTR": "datamodules.synthvtr.datamodule",
    "TrainVideoChunks": "datamodules.preferences",
    "VATEX": "datamodules.vatex",
    "VideoFolder": "datamodules.folder",
}

__all__ = ["MSRVTT", "MSVD", "VATEX", "CaptionRecord", "CaptionStore", "DiDeMo", "PreferenceDataModule", "SynthVTR",
           "TrainVideoChunks", "VideoFolder", "VideoTextDataModule"]


def __getattr__(name: str) -> Any:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_DEFINED_IN[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
