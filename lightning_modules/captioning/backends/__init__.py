"""Caption backends (VLMs, chat APIs, the SynthVTR simulator) and text generators (prompt engineers)."""

from lightning_modules.captioning.backends.base import (
    CaptionBackend,
    CaptionOutput,
    CaptionRequest,
    TextGenerator,
    parse_caption_list,
)
from lightning_modules.captioning.backends.openai_compatible import OpenAICompatible
from lightning_modules.captioning.backends.simulated import Simulated
from lightning_modules.captioning.backends.smollm import SmolLM2, TransformersTextLM
from lightning_modules.captioning.backends.text_rewrite import TextRewrite
from lightning_modules.captioning.backends.trained import TrainedCaptioner
from lightning_modules.captioning.backends.transformers_vlm import TransformersVLM

__all__ = ["CaptionBackend", "CaptionOutput", "CaptionRequest", "OpenAICompatible", "Simulated", "SmolLM2",
           "TextGenerator", "TextRewrite", "TrainedCaptioner", "TransformersTextLM", "TransformersVLM",
           "parse_caption_list"]
