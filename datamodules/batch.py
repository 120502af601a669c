"""Typed batches that cross the DataLoader boundary.

Every row carries the dataset index it came from, so evaluation can gather across ranks, drop the
rows that ``DistributedSampler`` duplicates for padding, and restore dataset order exactly.

Videos travel as ``uint8`` frames (normalisation happens on the device, see
``BaseRetrievalModule.on_after_batch_transfer``) or, when the frozen-feature cache is active, as
pre-computed per-frame trunk features. Texts travel as strings (the method's backbone tokenises on
the device side) or as cached trunk token states.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    if hasattr(value, "to") and hasattr(value, "__dataclass_fields__"):
        return value.to(device)
    return value


class _Movable:
    """Dataclass mixin: ``.to(device)`` moves every tensor field (Lightning calls it for us)."""

    def to(self, device: torch.device | str) -> Any:
        device = torch.device(device)
        for f in fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, _move(getattr(self, f.name), device))
        return self


@dataclass
class TextBatch(_Movable):
    """A batch of queries (or any text to be embedded on the query side).

    Attributes:
        index: ``[B]`` dataset index of each text (position in the split's text list).
        video_index: ``[B]`` dataset index of the video each text describes.
        texts: the raw strings (always present; used for tokenisation and for error messages).
        cached_tokens: ``[B, L, H]`` frozen text-trunk token states when the feature cache is used.
        cached_mask: ``[B, L]`` bool mask for ``cached_tokens``.
    """

    index: Tensor
    video_index: Tensor
    texts: list[str]
    cached_tokens: Tensor | None = None
    cached_mask: Tensor | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class VideoBatch(_Movable):
    """A batch of videos.

    Attributes:
        index: ``[B]`` dataset index of each video.
        mask: ``[B, T]`` bool, True for real frames (short videos are padded at the end).
        frames: ``[B, T, 3, H, W]`` uint8 frames, or None when ``cached_frames`` is given.
        cached_frames: ``[B, T, F]`` frozen video-trunk features when the feature cache is used.
        video_ids: the dataset's string ids (for artifacts and error messages).
        aux: auxiliary text attached by the data module (narration per frame, K captions, a
            supplement); keys are the configured aux names (``narration``, ``multi``, ``supplement``),
            values are lists aligned with the batch, one ``list[str]`` per video (narration: one caption
            per real frame, aligned to the sampled frames; raw strings, the method tokenises).
        failed: ``(dataset index, video id, error)`` of the videos dropped from this batch because they
            failed to decode (``on_decode_error: skip``); the data module counts them.
    """

    index: Tensor
    mask: Tensor
    video_ids: list[str]
    frames: Tensor | None = None
    cached_frames: Tensor | None = None
    aux: dict[str, Any] = field(default_factory=dict)
    failed: list[tuple[int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class PairBatch(_Movable):
    """A training batch: row ``i`` of ``text`` describes row ``i`` of ``video``."""

    text: TextBatch
    video: VideoBatch

    def __len__(self) -> int:
        return len(self.video)
