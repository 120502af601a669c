"""The one interface every method sees: ``VideoTextBackbone``.

A backbone is split into a *trunk* (the large pretrained network) and a *head* (cheap layers that map
trunk outputs into the joint space). The split exists for one reason: when a trunk is frozen its
outputs depend only on the input and the weights, so the data module can compute them once and cache
them (``datamodules.feature_cache``); training then runs only the heads and the method's own modules.

Shapes: B batch, T frames, L tokens, H trunk width, F frame-trunk width, D joint embedding width.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.components.pooling import masked_mean_pool as masked_mean

__all__ = ["TextFeatures", "VideoTextBackbone", "last_valid_token", "masked_mean"]


@dataclass
class TextFeatures:
    """Text side of the joint space.

    Attributes:
        sentence: ``[B, D]`` one vector per text (not normalised).
        tokens: ``[B, L, D]`` one vector per token, in the same space (for word-level matching).
        mask: ``[B, L]`` bool, True for real tokens (special tokens included, padding excluded).
    """

    sentence: Tensor
    tokens: Tensor
    mask: Tensor


class VideoTextBackbone(nn.Module, ABC):
    """Abstract video-text encoder pair.

    Subclasses set ``embed_dim``, ``max_words``, ``image_size``, ``image_mean``, ``image_std`` in
    ``__init__`` and implement the trunk/head methods. ``encode_frames`` and ``encode_text`` compose
    them and are what methods call.
    """

    embed_dim: int
    max_words: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    # ----------------------------------------------------------------------------- text
    @abstractmethod
    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Tokenise to fixed length ``max_words``: ``{"input_ids": [B, L], "attention_mask": [B, L]}``."""

    @abstractmethod
    def text_trunk(self, tokens: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Run the text trunk: returns ``(hidden [B, L, H], mask [B, L] bool)``."""

    @abstractmethod
    def text_head(self, hidden: Tensor, mask: Tensor) -> TextFeatures:
        """Map trunk token states to the joint space (sentence pooling happens here)."""

    def sentence_head(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """Only the sentence embedding ``[B, D]`` of ``text_head``, for texts whose token embeddings nobody reads
        (auxiliary captions). A backbone whose head maps every token overrides this to skip that work."""
        return self.text_head(hidden, mask).sentence

    def token_embedding_layer(self) -> nn.Module:
        """The text trunk's input token-embedding lookup (``input_ids -> [B, L, W]``).

        Role embeddings (``lightning_modules/components/roles.py``) are added to its output, so a role reaches the
        text tower through its input only.
        """
        raise NotImplementedError(f"{type(self).__name__} does not expose its token embedding layer; implement "
                                  "token_embedding_layer() to use role embeddings")

    # ----------------------------------------------------------------------------- video
    @abstractmethod
    def frame_trunk(self, frames: Tensor) -> Tensor:
        """Run the image trunk on normalised frames ``[N, 3, H, W]``: returns ``[N, F]``."""

    @abstractmethod
    def frame_head(self, features: Tensor) -> Tensor:
        """Map frame-trunk features ``[..., F]`` to the joint space ``[..., D]``."""

    # ----------------------------------------------------------------------------- caching facts
    # Adapters set ``freeze_video`` / ``freeze_text`` in ``__init__``; a frozen trunk's outputs may be cached.
    freeze_video: bool = False
    freeze_text: bool = False

    @property
    def video_trunk_frozen(self) -> bool:
        """True when the frame trunk receives no gradient (its outputs may be cached)."""
        return self.freeze_video

    @property
    def text_trunk_frozen(self) -> bool:
        """True when the text trunk receives no gradient (its outputs may be cached)."""
        return self.freeze_text

    @abstractmethod
    def trunk_fingerprint(self) -> dict[str, Any]:
        """JSON-serialisable facts that identify the trunks' outputs (architecture, weights, preprocessing).

        Two backbones with equal fingerprints must produce identical trunk outputs for the same input;
        the feature cache keys its directory on this.
        """

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pretrained trunks (they get ``lr * coef_lr``, as in CLIP4Clip)."""
        return []

    # ----------------------------------------------------------------------------- what CLIP brings along
    def pretrained_logit_scale(self) -> float | None:
        """``log`` of the contrastive logit scale the pretrained weights were trained with, if they carry one.

        CLIP4Clip and NarVid start their InfoNCE from CLIP's learnt value (``log 100`` for OpenAI CLIP);
        backbones assembled from separately pretrained towers have none.
        """
        return None

    def clip_text_transformer(self) -> tuple[nn.ModuleList, Tensor] | None:
        """``(residual blocks, positional embedding [context, width])`` of a CLIP text transformer, if any.

        CLIP4Clip's ``seqTransf`` header (and NarVid's two temporal transformers) copy their first blocks
        and the positional embedding from here at initialisation (``temporal_init: clip_text``).
        """
        return None

    # ----------------------------------------------------------------------------- composed
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Normalised frames ``[B, T, 3, H, W]`` -> per-frame embeddings ``[B, T, D]``."""
        b, t = frames.shape[:2]
        trunk = self.frame_trunk(frames.flatten(0, 1))
        return self.frame_head(trunk.view(b, t, -1))

    def encode_text(self, texts: list[str]) -> TextFeatures:
        """Raw strings -> text features, tokenising on the backbone's device."""
        device = next(self.parameters()).device
        tokens = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        hidden, mask = self.text_trunk(tokens)
        return self.text_head(hidden, mask)

    def freeze_(self, module: nn.Module) -> None:
        """Freeze a sub-module in place (no grad, eval mode kept by ``train()``)."""
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()


def last_valid_token(hidden: Tensor, mask: Tensor) -> Tensor:
    """The state of the last unmasked token per row (CLIP's EOT position when padding is at the end)."""
    last = mask.long().sum(1).clamp_min(1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
