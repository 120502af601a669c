"""Video-text backbones: the ``VideoTextBackbone`` interface and its implementations."""

from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone
from lightning_modules.backbones.open_clip_backbone import OpenCLIPBackbone
from lightning_modules.backbones.two_tower import PretrainedTwoTower

__all__ = ["OpenCLIPBackbone", "PretrainedTwoTower", "TextFeatures", "VideoTextBackbone"]
