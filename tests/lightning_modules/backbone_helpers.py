"""The tiny open_clip backbone, texts and random frames the backbone tests share."""

from __future__ import annotations

import torch

from lightning_modules.backbones import OpenCLIPBackbone

TINY = "vtr-tiny-clip"
TEXTS = [
    "a cat",
    "a man is playing a guitar on a small stage while people watch",
    "a dog runs after a red ball in the park and then jumps into the lake to cool down ok",
]


def tiny_clip(seed: int = 0, **kwargs: object) -> OpenCLIPBackbone:
    torch.manual_seed(seed)
    return OpenCLIPBackbone(TINY, pretrained=None, max_words=16, **kwargs)


def random_frames(seed: int = 1, size: int = 64, b: int = 2, t: int = 3) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size, generator=torch.Generator().manual_seed(seed))
