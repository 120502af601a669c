"""Clip-level geometric augmentation: the "randomly rotated / flipped" video copies of conical embedding
optimisation (ECAI 2025 slides, "Preprocessing").

One transform is drawn per *clip* and applied to every frame of it, so an augmented copy is the same video seen
through one rotation or flip, never a clip whose frames disagree. Frames are square (short-side resize + centre
crop), so quarter turns keep the shape. Transforms act on ``uint8 [T, 3, H, W]`` (or any ``[..., H, W]``) tensors.

A draw takes the caller's ``numpy`` generator: the training sampler's per-item generator makes the transform a
function of (seed, epoch, position), so a resumed run draws what the uninterrupted run drew; the feature cache
draws its fixed pool of views from a generator seeded by (seed, video id, view).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

ClipTransform = Literal["hflip", "vflip", "rot90", "rot180", "rot270"]
CLIP_TRANSFORMS: tuple[str, ...] = get_args(ClipTransform)

_APPLY: dict[str, Callable[[Tensor], Tensor]] = {
    "hflip": lambda x: torch.flip(x, dims=(-1,)),
    "vflip": lambda x: torch.flip(x, dims=(-2,)),
    "rot90": lambda x: torch.rot90(x, 1, dims=(-2, -1)),
    "rot180": lambda x: torch.rot90(x, 2, dims=(-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, dims=(-2, -1)),
}


def check_transforms(names: Sequence[str]) -> tuple[str, ...]:
    """The transform names, validated (the error names the data module argument and the choices)."""
    names = tuple(names)
    unknown = sorted(set(names) - set(CLIP_TRANSFORMS))
    if not names or unknown:
        raise ValueError(f"data.init_args.augmentations: {list(names)} must be a non-empty list of "
                         f"{list(CLIP_TRANSFORMS)} (unknown: {unknown})")
    return names


def apply_clip_transform(frames: Tensor, name: str) -> Tensor:
    """``frames`` (``[..., H, W]``, every frame of one clip) under the one transform ``name``."""
    if name not in _APPLY:
        raise ValueError(f"unknown clip transform {name!r}; expected one of {list(CLIP_TRANSFORMS)}")
    if name in ("rot90", "rot270") and frames.shape[-1] != frames.shape[-2]:
        raise ValueError(f"{name} needs square frames, got {tuple(frames.shape[-2:])}")
    return _APPLY[name](frames).contiguous()


def draw_transforms(rng: np.random.Generator, names: Sequence[str], count: int) -> list[str]:
    """``count`` transforms for ``count`` copies of one clip: distinct while the pool lasts, then repeated."""
    order = [names[i] for i in rng.permutation(len(names))]
    return [order[i % len(order)] for i in range(count)]


def view_generator(seed: int, video_id: str) -> np.random.Generator:
    """The generator of a video's cached pool of augmented views (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
