"""Masked pooling helpers."""

from __future__ import annotations

from torch import Tensor


def masked_mean_pool(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, T, D]`` over the ``T`` positions where ``mask [B, T]`` is True (CLIP4Clip meanP)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
