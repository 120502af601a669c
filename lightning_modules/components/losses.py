"""Contrastive losses used by several methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_infonce(logits: Tensor, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over a ``[B, B]`` logit matrix (rows: texts, columns: videos).

    With ``positives`` None the diagonal holds the positive pairs (CLIP / CLIP4Clip). A boolean
    ``[B, B]`` ``positives`` mask allows several positives per row (e.g. two captions of the same
    video in one batch): each direction then averages ``-log softmax`` over the row's positives.

    Returns ``(L_t2v + L_v2t) / 2``.
    """
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_infonce expects a square [B, B] matrix, got {tuple(logits.shape)}")
    logits = logits.float()
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    pos = positives.to(logits.dtype)
    t2v = -(F.log_softmax(logits, dim=1) * pos).sum(1) / pos.sum(1).clamp_min(1)
    v2t = -(F.log_softmax(logits, dim=0) * pos).sum(0) / pos.sum(0).clamp_min(1)
    return 0.5 * (t2v.mean() + v2t.mean())
