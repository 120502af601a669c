"""Small text and video batches for the method tests (tiny CLIP input size, one padded frame)."""

from __future__ import annotations

from typing import Any

import torch

from datamodules.batch import TextBatch, VideoBatch


def colour(i: int) -> str:
    return "red" if i % 2 else "blue"


def text_and_video_batches(aux: dict[str, Any], n_videos: int = 5, n_texts: int = 7,
                           frames: int = 4) -> tuple[TextBatch, VideoBatch]:
    """``n_texts`` queries about ``n_videos`` random 64-px clips (video 0's last frame padded), with ``aux``."""
    g = torch.Generator().manual_seed(1)
    video = VideoBatch(index=torch.arange(n_videos), mask=torch.ones(n_videos, frames, dtype=torch.bool),
                       video_ids=[f"v{i}" for i in range(n_videos)],
                       frames=torch.randn(n_videos, frames, 3, 64, 64, generator=g), aux=aux)
    video.mask[0, 3:] = False
    text = TextBatch(index=torch.arange(n_texts), video_index=torch.arange(n_texts) % n_videos,
                     texts=[f"query {i} about a {colour(i)} ball" for i in range(n_texts)])
    return text, video
