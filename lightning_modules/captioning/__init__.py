"""Captioning: caption generation as a ``predict`` run and its backends.

* ``backends/``: the generators a :class:`Captioner` runs (``TransformersVLM``, ``OpenAICompatible``,
  ``Simulated``) and the text generators (``TransformersTextLM``, ``SmolLM2``); the ones holding weights
  are ``nn.Module`` s.
* ``captioner.py``: :class:`Captioner`, the ``LightningModule`` that ``python main.py predict --config
  configs/captioners/<name>.yaml`` runs; ``callbacks/caption_writer.py`` writes its records.

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
    TransformersTextLM,
    TransformersVLM,
    parse_caption_list,
)
from lightning_modules.captioning.captioner import EXCAE_PROMPT, NARVID_PROMPT, Captioner

__all__ = ["EXCAE_PROMPT", "NARVID_PROMPT", "CaptionBackend", "CaptionOutput", "CaptionRequest", "Captioner",
           "OpenAICompatible", "Simulated", "SmolLM2", "TextGenerator", "TransformersTextLM", "TransformersVLM",
           "parse_caption_list"]
