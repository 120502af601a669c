"""Retrieval methods: one LightningModule per paper on top of ``BaseRetrievalModule``; ``captioning/``: the
``Captioner`` that ``predict`` runs, its backends and the trainable ``PrefixCaptioner``."""

from lightning_modules.backbones import OpenCLIPBackbone, PretrainedTwoTower, VideoTextBackbone
from lightning_modules.base import BaseRetrievalModule
from lightning_modules.captioning import (
    CaptionBackend,
    Captioner,
    CaptionerTraining,
    OpenAICompatible,
    PrefixCaptioner,
    Simulated,
    SmolLM2,
    TrainedCaptioner,
    TransformersTextLM,
    TransformersVLM,
)
from lightning_modules.care_dpo import CaReRetriever
from lightning_modules.clip4clip import CLIP4Clip
from lightning_modules.conical import ConicalEmbedding
from lightning_modules.excae import ExCae
from lightning_modules.narvid import NarVid

__all__ = ["BaseRetrievalModule", "CLIP4Clip", "CaReRetriever", "CaptionBackend", "Captioner", "CaptionerTraining",
           "ConicalEmbedding", "ExCae", "NarVid", "OpenAICompatible", "OpenCLIPBackbone", "PrefixCaptioner",
           "PretrainedTwoTower", "Simulated", "SmolLM2", "TrainedCaptioner", "TransformersTextLM", "TransformersVLM",
           "VideoTextBackbone"]
