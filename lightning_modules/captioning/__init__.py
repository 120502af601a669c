"""Captioning: caption generation as a ``predict`` run, its backends, and a trainable captioner.

* ``backends/``: the generators a :class:`Captioner` runs (``TransformersVLM``, ``OpenAICompatible``,
  ``Simulated``, ``TextRewrite``: a text-only LLM rewriting the video's text) and the text generators
  (``TransformersTextLM``, ``SmolLM2``); the ones holding weights are ``nn.Module`` s.
* ``captioner.py``: :class:`Captioner`, the ``LightningModule`` that ``python main.py predict --config
  configs/captioners/<name>.yaml`` runs; ``callbacks/caption_writer.py`` writes its records.
* ``trainable.py``: :class:`TrainableCaptioner`, the interface a caption-training method optimises
  (``generate`` and the teacher-forced ``sequence_logprob``), and :class:`PrefixCaptioner`, a causal LM
  conditioned on frame features through a visual prefix; ``lora.py``: the low-rank adapters it may train.

The caption kinds (``narration``, ``multi``, ``supplement``) are declared once, in ``datamodules/captions.py``.
"""

from lightning_modules.captioning.backends import (
    CaptionBackend,
    CaptionOutput,
    CaptionRequest,
    OpenAICompatible,
    Simulated,
    SmolLM2,
    TextGenerator,
    TextRewrite,
    TrainedCaptioner,
    TransformersTextLM,
    TransformersVLM,
    parse_caption_list,
)
from lightning_modules.captioning.captioner import EXCAE_PROMPT, NARVID_PROMPT, Captioner
from lightning_modules.captioning.lora import adapters_disabled, add_lora
from lightning_modules.captioning.trainable import PrefixCaptioner, TrainableCaptioner, VisualProjector
from lightning_modules.captioning.training import CaptionerTraining

__all__ = [
    "EXCAE_PROMPT",
    "NARVID_PROMPT",
    "CaptionBackend",
    "CaptionOutput",
    "CaptionRequest",
    "Captioner",
    "CaptionerTraining",
    "OpenAICompatible",
    "PrefixCaptioner",
    "Simulated",
    "SmolLM2",
    "TextGenerator",
    "TextRewrite",
    "TrainableCaptioner",
    "TrainedCaptioner",
    "TransformersTextLM",
    "TransformersVLM",
    "VisualProjector",
    "adapters_disabled",
    "add_lora",
    "parse_caption_list",
]
