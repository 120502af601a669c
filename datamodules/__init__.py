"""Data modules for text-video retrieval benchmarks."""

from datamodules.base import VideoTextDataModule
from datamodules.captions import CaptionRecord, CaptionStore
from datamodules.didemo import DiDeMo
from datamodules.msrvtt import MSRVTT
from datamodules.msvd import MSVD
from datamodules.synthetic import SynthVTR
from datamodules.vatex import VATEX

__all__ = ["MSRVTT", "MSVD", "VATEX", "CaptionRecord", "CaptionStore", "DiDeMo", "SynthVTR", "VideoTextDataModule"]
