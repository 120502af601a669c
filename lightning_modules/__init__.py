"""Retrieval methods: one LightningModule per paper on top of ``BaseRetrievalModule``; ``captioning/``: the
``Captioner`` that ``predict`` runs, its backends and the trainable ``PrefixCaptioner``.

A new method needs no entry here: every module directly in this folder is imported with the package, and each
``LightningModule`` subclass it defines is exported under its class name (``lightning_modules/registry.py``), so a
config names it ``class_path: MyMethod`` and its checkpoints load.
"""

import sys

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
from lightning_modules.embedding import EmbeddingRetrievalModule
from lightning_modules.excae import ExCae
from lightning_modules.narvid import NarVid
from lightning_modules.registry import register_methods

__all__ = ["BaseRetrievalModule", "CLIP4Clip", "CaReRetriever", "CaptionBackend", "Captioner", "CaptionerTraining",
           "ConicalEmbedding", "EmbeddingRetrievalModule", "ExCae", "NarVid", "OpenAICompatible", "OpenCLIPBackbone",
           "PrefixCaptioner", "PretrainedTwoTower", "Simulated", "SmolLM2", "TrainedCaptioner", "TransformersTextLM",
           "TransformersVLM", "VideoTextBackbone"]


register_methods(sys.modules[__name__])  # every other method file of this folder (lightning_modules/registry.py)
