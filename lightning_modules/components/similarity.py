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
                           masked_value: Literal["neginf", "zero"] = "neginf", skip_padded_words: bool = True,
                           frames_normalized: bool = False) -> Tensor:
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
        skip_padded_words: compute the word-frame cosines only up to the last word slot any query of this call
            uses (``L`` is the padded length; real queries fill a third of it), with the same result: a cut-off
            slot is masked for every query, so it adds nothing to either direction except, under ``zero``, the
            masked 0 of the frame->word maximum, which is put back. ``False`` computes every slot (the arithmetic
            before; the reference the tests and ``benchmarks/narvid_eval.py`` compare against).
        frames_normalized: ``frames`` are already ``F.normalize(frames, dim=-1)`` (a caller that computed them for
            its own use passes them on instead of paying, and backpropagating, the normalisation twice).

    Returns:
        ``[n_t, n_v]``: ``(sum_l a_l max_f S_lf + sum_f b_f max_l S_lf) / 2`` with cosine ``S``.
    """
    if word_weights is None:
        word_weights = word_mask.to(words.dtype) / word_mask.to(words.dtype).sum(-1, keepdim=True).clamp_min(1)
    if frame_weights is None:
        frame_weights = frame_mask.to(frames.dtype) / frame_mask.to(frames.dtype).sum(-1, keepdim=True).clamp_min(1)
    v = frames if frames_normalized else F.normalize(frames, dim=-1)
    if not skip_padded_words:
        return _all_slots(words, word_mask, v, frame_mask, word_weights, frame_weights, masked_value)
    word_mask = word_mask.bool()
    n_t, slots, d = words.shape
    used = word_mask.any(0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    words, word_mask = words[:, :length], word_mask[:, :length]
    n_v, t, _ = frames.shape
    w = F.normalize(words, dim=-1)
    zero = masked_value == "zero"
    if zero:  # a masked word's row of cosines is then exactly 0, what the masked value is: no pass over S needed
        w = w * word_mask[..., None].to(w.dtype)
    # one GEMM over the real word slots: [n_t, length, D] x [D, n_v * T]
    s = torch.matmul(w, v.reshape(n_v * t, d).t())
    # masked in place: the product is a fresh tensor nobody else holds (matmul returns no view of it, so autograd
    # needs no copy either), and an out-of-place mask would cost a copy of all of it
    fm = frame_mask.bool().reshape(-1 if frame_mask.ndim == 3 else 1, 1, n_v * t)
    s.masked_fill_(~fm, 0.0 if zero else float("-inf"))
    if not zero:
        s.masked_fill_(~word_mask[:, :, None], float("-inf"))
    s = s.view(n_t, length, n_v, t)
    if s.requires_grad:  # max's backward scatters into one index; amax's splits ties and costs several passes
        best_frame, best_word = s.max(dim=-1).values, s.max(dim=1).values
    else:  # amax writes no indices
        best_frame, best_word = s.amax(dim=-1), s.amax(dim=1)
    best_frame = best_frame.transpose(1, 2)  # [n_t, n_v, length]; best_word [n_t, n_v, T]
    if zero and length < slots:  # every query has masked slots past ``length``: each is a 0 in the word maximum
        best_word = best_word.clamp_min(0.0)
    if not zero:
        best_frame, best_word = best_frame.nan_to_num(0.0, neginf=0.0), best_word.nan_to_num(0.0, neginf=0.0)
    # back to every slot (the cut-off ones are 0, as their masked value or weight makes them): the weighted sum
    # then adds the same numbers in the same order as over the whole tensor, so the result is bit for bit the same
    best_frame = F.pad(best_frame, (0, slots - length)) if length < slots else best_frame.contiguous()
    if frame_weights.ndim == 2:
        frame_weights = frame_weights.unsqueeze(0).expand(n_t, -1, -1)
    t2v = (best_frame * word_weights[:, None, :].to(s.dtype)).sum(-1)
    v2t = (best_word * frame_weights.to(s.dtype)).sum(-1)
    return 0.5 * (t2v + v2t)


def _all_slots(words: Tensor, word_mask: Tensor, v: Tensor, frame_mask: Tensor, word_weights: Tensor,
               frame_weights: Tensor, masked_value: Literal["neginf", "zero"]) -> Tensor:
    """``token_frame_similarity`` over every word slot: the whole ``[n_t, n_v, L, T]`` tensor, masked after
    (``v``: the normalised frames)."""
    w = F.normalize(words, dim=-1)
    s = torch.einsum("ild,jfd->ijlf", w, v)  # [n_t, n_v, L, T]
    wm = word_mask.bool()[:, None, :, None]
    fm = frame_mask.bool()
    fm = fm[:, :, None, :] if fm.ndim == 3 else fm[None, :, None, :]
    s = s.masked_fill(~(wm & fm), float("-inf") if masked_value == "neginf" else 0.0)
    if frame_weights.ndim == 2:
        frame_weights = frame_weights.unsqueeze(0).expand(s.shape[0], -1, -1)
    best_frame = s.max(dim=-1).values.nan_to_num(0.0, neginf=0.0)  # [n_t, n_v, L]
    best_word = s.max(dim=-2).values.nan_to_num(0.0, neginf=0.0)  # [n_t, n_v, T]
    t2v = (best_frame * word_weights[:, None, :].to(s.dtype)).sum(-1)
    v2t = (best_word * frame_weights.to(s.dtype)).sum(-1)
    return 0.5 * (t2v + v2t)
