"""Retrieval methods: one LightningModule per paper on top of ``BaseRetrievalModule``."""

from lightning_modules.backbones import OpenCLIPBackbone, PretrainedTwoTower, VideoTextBackbone
from lightning_modules.base import BaseRetrievalModule
from lightning_modules.clip4clip import CLIP4Clip

__all__ = ["BaseRetrievalModule", "CLIP4Clip", "OpenCLIPBackbone", "PretrainedTwoTower", "VideoTextBackbone"]
