"""Data modules for text-video retrieval benchmarks."""

from datamodules.base import VideoTextDataModule
from datamodules.msrvtt import MSRVTT
from datamodules.synthetic import SynthVTR

__all__ = ["MSRVTT", "SynthVTR", "VideoTextDataModule"]
