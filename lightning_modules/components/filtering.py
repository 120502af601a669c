"""Query-aware frame filtering (NarVid §3.4, Eq. 4) and its top-k counterpart (NarVid Table 4)."""

from __future__ import annotations

import torch
from torch import Tensor


def _masked_softmax(scores: Tensor, mask: Tensor, temperature: float, all_valid: bool = False) -> Tensor:
    if all_valid:  # no padded frame (the usual case at evaluation): the masking passes would change nothing
        return torch.softmax(scores / temperature, dim=-1)
    logits = (scores / temperature).masked_fill(~mask, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return probs.nan_to_num(0.0)  # rows without any valid frame


def nucleus_filter(scores: Tensor, mask: Tensor, temperature: float = 0.1, p: float = 0.4) -> Tensor:
    """Filtering scores ``w [..., T]`` from query-frame similarities ``scores [..., T]``.

    NarVid (released code): softmax at ``temperature`` over valid frames, sort descending, keep every
    frame whose cumulative mass *including itself* is ``<= p`` and always the top one, renormalise the
    kept weights to sum to 1. Unlike LLM nucleus sampling, the frame that crosses ``p`` is dropped.
    The selection is a hard sort (no gradient); gradients flow through the kept weights.
    Masked frames always get weight 0.
    """
    mask = mask.bool()
    all_valid = bool(mask.all())  # before broadcasting: the mask is per video, the scores per query and video
    mask = mask.expand_as(scores)
    probs = _masked_softmax(scores, mask, temperature, all_valid)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(dim=-1)
    keep_sorted = cumulative <= p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    if not all_valid:
        keep &= mask
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)


def topk_filter(scores: Tensor, mask: Tensor, temperature: float = 0.1, k: int = 3) -> Tensor:
    """Keep the ``k`` most query-similar valid frames (fixed budget), softmax weights renormalised."""
    mask = mask.bool().expand_as(scores)
    probs = _masked_softmax(scores, mask, temperature)
    k = min(k, scores.shape[-1])
    top = probs.topk(k, dim=-1).indices
    keep = torch.zeros_like(mask).scatter(-1, top, True) & mask
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)


def uniform_weights(scores: Tensor, mask: Tensor) -> Tensor:
    """No filtering (the ``QAF`` ablation off): equal weight on every valid frame."""
    w = mask.bool().expand_as(scores).to(scores.dtype)
    return w / w.sum(-1, keepdim=True).clamp_min(1.0)
