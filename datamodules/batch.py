"""Typed batches that cross the DataLoader boundary.

Every row carries the dataset index it came from, so evaluation can gather across ranks, drop the
rows that ``DistributedSampler`` duplicates for padding, and restore dataset order exactly.

Videos travel as ``uint8`` frames (normalised on the device by ``normalize_frames``, see
``BaseRetrievalModule.on_after_batch_transfer``) or, when the frozen-feature cache is active, as
pre-computed per-frame trunk features. Texts travel as strings (the method's backbone tokenises on
the device side) or as cached trunk token states. Auxiliary captions of a video (``datamodules/captions.py``)
travel as one typed ``AuxCaptions`` per kind, with their cached trunk states when the text trunk is frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from datamodules.captions import CaptionKind


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


def normalize_frames(frames: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``uint8 [..., T, 3, H, W]`` frames -> float32 ``(x / 255 - mean) / std`` per channel, on ``frames``' device.

    The one place frames are normalised: the model on the device (``BaseRetrievalModule.on_after_batch_transfer``)
    and the frozen-feature cache builder (``datamodules/feature_cache.py``) both call it.
    """
    mean_t = torch.tensor(mean, device=frames.device).view(1, 1, 3, 1, 1)
    std_t = torch.tensor(std, device=frames.device).view(1, 1, 3, 1, 1)
    return (frames.float() / 255.0 - mean_t) / std_t


@dataclass
class AuxCaptions(_Movable):
    """Auxiliary captions of one kind (``datamodules/captions.py``) for the videos of a batch.

    Attributes:
        captions: ``[B][N_b]`` raw strings, one list per video (the method's backbone tokenises them).
        tokens: ``[B, N, L, H]`` frozen text-trunk states of each caption when the feature cache is used
            (``N`` the longest list of the batch; absent captions are zero rows), else None.
        mask: ``[B, N, L]`` bool token mask of ``tokens`` (all False for an absent caption).
    """

    kind: ClassVar[CaptionKind]
    per_frame: ClassVar[bool] = False  # one caption per fed frame, aligned to the sampled frames
    captions: list[list[str]]
    tokens: Tensor | None = None
    mask: Tensor | None = None

    def slots(self, num_frames: int) -> int:
        """``N``, the caption slots per video: the ``T`` frame slots for per-frame captions, else the longest
        list of the batch (or the cached rows)."""
        if self.per_frame:
            return num_frames
        if self.tokens is not None:
            return int(self.tokens.shape[1])
        return max((len(row) for row in self.captions), default=0)

    def present(self, slots: int, device: torch.device | None = None) -> Tensor:
        """``[B, N]`` bool: slot ``n`` of video ``b`` holds a caption."""
        # one comparison on the device instead of a write per video (a kernel launch each on a GPU)
        counts = torch.tensor([len(captions) for captions in self.captions], dtype=torch.long)
        return torch.arange(slots)[None, :].lt(counts[:, None]).to(device)


@dataclass
class NarrationCaptions(AuxCaptions):
    """NarVid's narration: one caption per real fed frame, aligned to the sampled frames
    (``datamodules.datasets.align_narration``); the slots are the batch's ``T`` frame slots."""

    kind: ClassVar[CaptionKind] = "narration"
    per_frame: ClassVar[bool] = True


@dataclass
class MultiCaptions(AuxCaptions):
    """K generated captions per video (ExCae's caption set, ``kind: multi``)."""

    kind: ClassVar[CaptionKind] = "multi"


@dataclass
class SupplementCaptions(AuxCaptions):
    """Supplementary caption(s) of each video for one prompt (``kind: supplement``).

    Attributes:
        prompts: the prompt (id) each video's captions answer, one per video.
    """

    kind: ClassVar[CaptionKind] = "supplement"
    prompts: list[str] = field(default_factory=list)


AUX_CAPTION_TYPES: dict[str, type[AuxCaptions]] = {t.kind: t for t in (NarrationCaptions, MultiCaptions,
                                                                       SupplementCaptions)}


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
        aux: auxiliary captions attached by the data module, by kind (``narration``, ``multi``,
            ``supplement``): one typed ``AuxCaptions`` each (``NarrationCaptions``, ``MultiCaptions``,
            ``SupplementCaptions``), rows aligned with the batch. A ``predict`` batch carries the captioned
            ``frame_indices`` (one ``list[int]`` per video) under ``"frame_indices"`` instead.
        failed: ``(dataset index, video id, error)`` of the videos dropped from this batch because they
            failed to decode (``on_decode_error: skip``); the data module counts them.
        augmented_frames: ``[B, A, T, 3, H, W]`` uint8 augmented copies of each training clip (data
            ``augmented_views`` = A > 0; one rotation/flip per copy, ``datamodules/augment.py``), else None.
        cached_augmented: ``[B, A, T, F]`` frozen video-trunk features of A views from the cache's pool, else None.
        augmentations: the transform of each copy, ``[B][A]`` names (empty lists without augmentation).
    """

    index: Tensor
    mask: Tensor
    video_ids: list[str]
    frames: Tensor | None = None
    cached_frames: Tensor | None = None
    aux: dict[str, Any] = field(default_factory=dict)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    augmented_frames: Tensor | None = None
    cached_augmented: Tensor | None = None
    augmentations: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass
class PairBatch(_Movable):
    """A training batch: row ``i`` of ``text`` describes row ``i`` of ``video``."""

    text: TextBatch
    video: VideoBatch

    def __len__(self) -> int:
        return len(self.video)
