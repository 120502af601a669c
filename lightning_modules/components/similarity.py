"""Similarity heads shared by the methods.

``token_frame_similarity`` is the fine-grained, query-dependent matching used by NarVid (§1.6, "fine")
and by Cap4Video/DRL-style word-frame interaction: every word of a query is compared with every frame
of a video. For a tile of ``n_t`` texts and ``n_v`` videos it builds an ``[n_t, n_v, L, T]`` tensor, which
is why the base module scores in tiles: over a whole 1k x 1k test set that tensor alone would be
384 M floats at L=32, T=12 (see ``benchmarks/eval_scoring.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``[n_a, D] x [n_b, D] -> [n_a, n_b]`` cosine similarities."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()


def token_frame_similarity(words: Tensor, word_mask: Tensor, frames: Tensor, frame_mask: Tensor,
                           word_weights: Tensor | None = None, frame_weights: Tensor | None = None,
                           masked_value: Literal["neginf", "zero"] = "neginf") -> Tensor:
    """Word-frame max matching, averaged over both directions.

    Args:
        words: ``[n_t, L, D]`` token embeddings of the queries.
        word_mask: ``[n_t, L]`` True for real tokens.
        frames: ``[n_v, T, D]`` frame embeddings.
        frame_mask: ``[n_v, T]`` True for real frames, or query-dependent ``[n_t, n_v, T]`` (e.g. the
            frames kept by NarVid's filter).
        word_weights: ``[n_t, L]`` weights summing to 1 over real tokens (default: uniform).
        frame_weights: ``[n_v, T]`` or query-dependent ``[n_t, n_v, T]`` weights summing to 1 over real
            frames (default: uniform).

        masked_value: ``neginf`` keeps masked entries out of both maxima; ``zero`` sets them to 0 before
            the max, as the Cap4Video/NarVid code does (a masked 0 can win over negative cosines).

    Returns:
        ``[n_t, n_v]``: ``(sum_l a_l max_f S_lf + sum_f b_f max_l S_lf) / 2`` with cosine ``S``.
    """
    w = F.normalize(words, dim=-1)
    v = F.normalize(frames, dim=-1)
    s = torch.einsum("ild,jfd->ijlf", w, v)  # [n_t, n_v, L, T]
    wm = word_mask.bool()[:, None, :, None]
    fm = frame_mask.bool()
    fm = fm[:, :, None, :] if fm.ndim == 3 else fm[None, :, None, :]
    s = s.masked_fill(~(wm & fm), float("-inf") if masked_value == "neginf" else 0.0)
    if word_weights is None:
        word_weights = word_mask.to(s.dtype) / word_mask.to(s.dtype).sum(-1, keepdim=True).clamp_min(1)
    if frame_weights is None:
        frame_weights = frame_mask.to(s.dtype) / frame_mask.to(s.dtype).sum(-1, keepdim=True).clamp_min(1)
    if frame_weights.ndim == 2:
        frame_weights = frame_weights.unsqueeze(0).expand(s.shape[0], -1, -1)
    best_frame = s.max(dim=-1).values.nan_to_num(0.0, neginf=0.0)  # [n_t, n_v, L]
    best_word = s.max(dim=-2).values.nan_to_num(0.0, neginf=0.0)  # [n_t, n_v, T]
    t2v = (best_frame * word_weights[:, None, :].to(s.dtype)).sum(-1)
    v2t = (best_word * frame_weights.to(s.dtype)).sum(-1)
    return 0.5 * (t2v + v2t)
