"""Text-video retrieval metrics (R@K, median rank, mean rank) for both directions.

Why our own instead of ``torchmetrics.retrieval``: torchmetrics 1.9 treats a target as present only
when its prediction is > 0, so a ground truth with a score <= 0 (common with raw logits or centred
similarities) silently vanishes from the ranking; it is also about 200x slower on a full
``num_texts x num_videos`` matrix because it loops over queries. Here every rank is one vectorised
comparison against the ground-truth score.

Conventions, chosen so that numbers are reproducible and cannot be inflated:

* Ranks are 1-based.
* Ties are **pessimistic**: a candidate that scores exactly as high as the ground truth counts as
  ranked above it, i.e. ``rank = #{candidates c (GT included): score(c) >= score(GT)}``. A collapsed
  model (constant similarity matrix) therefore gets the worst rank, not a lucky R@1. Optimistic or
  index-order tie breaking would reward collapse.
* Scores are compared in float32 (float64 inputs stay float64): fp16/bf16 inputs are upcast first so
  the comparison is exact on the stored values and identical on CPU and CUDA.
* Video-to-text with several captions per video follows CLIP4Clip's multi-sentence protocol: each
  video ``u``'s caption *group* is scored against query video ``v`` by its best caption,
  ``g[v, u] = max_{i: text_to_video[i] == u} sim[i, v]``, and ``v``'s rank is the rank of its own group
  among all groups. With one caption per video this is plain retrieval on the transposed matrix.
  (Ranking individual captions instead would make v2t R@1 depend on how many captions a dataset has.)

Memory: t2v never looks at more than ``chunk_size x num_videos`` scores at once; v2t keeps one
``num_videos x num_videos`` group-max matrix, built chunk by chunk with ``scatter_reduce(amax)``.
Everything runs on the device of the input tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ranks_t2v", "ranks_v2t", "retrieval_metrics", "summarize_ranks"]

# Cut-offs reported as R@K; rsum is the sum of these over both directions.
RECALL_KS: tuple[int, ...] = (1, 5, 10)

ArrayLike = Tensor | np.ndarray
IndexLike = Tensor | np.ndarray | Sequence[int]


def _as_score_tensor(sim: ArrayLike) -> Tensor:
    """Turn ``sim`` into a 2-D float32/float64 tensor on its own device, without copying when possible.

    Half-precision inputs are upcast because fp16 comparisons on CUDA and CPU must agree and because
    downstream sums of booleans are done in float; float64 is kept to avoid losing precision.
    """
    if isinstance(sim, np.ndarray):
        # Negative strides (e.g. from np.flip) are not accepted by torch.from_numpy.
        sim = torch.from_numpy(np.ascontiguousarray(sim))
    elif not isinstance(sim, Tensor):
        raise TypeError(f"sim_t2v must be a torch.Tensor or numpy.ndarray, got {type(sim).__name__}")
    if sim.ndim != 2:
        raise ValueError(f"sim_t2v must be 2-D [num_texts, num_videos], got shape {tuple(sim.shape)}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim_t2v must have at least one text and one video, got shape {tuple(sim.shape)}")
    if sim.is_complex():
        raise ValueError("sim_t2v must be real-valued, got a complex tensor")
    if not sim.is_floating_point():
        # Integer scores: float64 represents every int32 exactly, so ties are preserved.
        sim = sim.to(torch.float64)
    elif sim.dtype != torch.float64:
        # fp16/bf16 -> float32 (exact); float32 inputs are returned unchanged, no copy.
        sim = sim.to(torch.float32)
    num_nan = int(torch.isnan(sim).sum().item())
    if num_nan:
        raise ValueError(
            f"sim_t2v contains {num_nan} NaN value(s) out of {sim.numel()}; ranks would be undefined "
            "(check for a diverged model or a 0/0 normalisation)"
        )
    return sim


def _as_index_tensor(
    text_to_video: IndexLike, num_texts: int, num_videos: int, device: torch.device
) -> Tensor:
    """Validate ``text_to_video`` and return it as an int64 tensor on ``device``.

    A wrong index would otherwise silently read another video's score (or crash deep inside a CUDA
    gather), so every check gives a message that says which entries are wrong.
    """
    if isinstance(text_to_video, Tensor):
        idx = text_to_video
    elif isinstance(text_to_video, np.ndarray):
        idx = torch.from_numpy(np.ascontiguousarray(text_to_video))
    else:
        # Explicit dtype: torch.as_tensor([]) would be float32.
        idx = torch.as_tensor(list(text_to_video), dtype=torch.long)
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"text_to_video must hold integer video indices, got dtype {idx.dtype}")
    if idx.ndim != 1:
        raise ValueError(f"text_to_video must be 1-D [num_texts], got shape {tuple(idx.shape)}")
    if idx.shape[0] != num_texts:
        raise ValueError(
            f"text_to_video has {idx.shape[0]} entries but sim_t2v has {num_texts} texts (rows); "
            "they must match one to one"
        )
    idx = idx.to(device=device, dtype=torch.long)
    bad = (idx < 0) | (idx >= num_videos)
    num_bad = int(bad.sum().item())
    if num_bad:
        where = torch.nonzero(bad).flatten()[:5].tolist()
        values = idx[bad][:5].tolist()
        raise ValueError(
            f"text_to_video has {num_bad} index(es) outside [0, {num_videos}) (num_videos from sim_t2v); "
            f"first at text positions {where} with values {values}"
        )
    return idx


def _check_chunk_size(chunk_size: int) -> None:
    """Reject chunk sizes that would loop forever or silently do nothing."""
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _check_every_video_has_caption(idx: Tensor, num_videos: int) -> None:
    """v2t ranks are undefined for a video with no caption (its group would be empty), so refuse."""
    counts = torch.bincount(idx, minlength=num_videos)
    missing = torch.nonzero(counts == 0).flatten()
    if missing.numel():
        raise ValueError(
            f"{missing.numel()} of {num_videos} video(s) have no caption in text_to_video, so video-to-text "
            f"ranks are undefined; first missing video indices: {missing[:10].tolist()}"
        )


def _ranks_t2v(sim: Tensor, idx: Tensor, chunk_size: int) -> Tensor:
    """Core t2v ranking on already-validated inputs (see :func:`ranks_t2v`)."""
    num_texts = sim.shape[0]
    ranks = torch.empty(num_texts, dtype=torch.long, device=sim.device)
    for start in range(0, num_texts, chunk_size):
        block = sim[start : start + chunk_size]  # view, no copy
        gt = block.gather(1, idx[start : start + chunk_size, None])
        # Pessimistic ties: the GT itself and every candidate scoring >= it are counted.
        ranks[start : start + chunk_size] = (block >= gt).sum(dim=1)
    return ranks


def _group_max(sim: Tensor, idx: Tensor, chunk_size: int) -> Tensor:
    """Return ``gt_[u, v] = max_{i: idx[i] == u} sim[i, v]`` (the transpose of ``g`` in the module doc).

    Built with ``scatter_reduce(amax)`` over text chunks so that no more than ``chunk_size`` rows of
    ``sim`` are touched at a time; max is order independent, so the result is deterministic on CUDA too.
    """
    num_videos = sim.shape[1]
    out = torch.full((num_videos, num_videos), -torch.inf, dtype=sim.dtype, device=sim.device)
    for start in range(0, sim.shape[0], chunk_size):
        block = sim[start : start + chunk_size]
        index = idx[start : start + chunk_size, None].expand_as(block)
        out.scatter_reduce_(0, index, block, reduce="amax", include_self=True)
    return out


def _ranks_v2t(sim: Tensor, idx: Tensor, chunk_size: int) -> Tensor:
    """Core v2t ranking on already-validated inputs (see :func:`ranks_v2t`)."""
    num_videos = sim.shape[1]
    group = _group_max(sim, idx, chunk_size)  # [group u, query video v]
    gt = group.diagonal()  # v's own group score
    ranks = torch.empty(num_videos, dtype=torch.long, device=sim.device)
    for start in range(0, num_videos, chunk_size):
        stop = start + chunk_size
        ranks[start:stop] = (group[:, start:stop] >= gt[None, start:stop]).sum(dim=0)
    return ranks


def ranks_t2v(sim_t2v: ArrayLike, text_to_video: IndexLike, chunk_size: int = 1024) -> Tensor:
    """1-based text-to-video rank of each text's ground-truth video, pessimistic ties.

    Args:
        sim_t2v: ``[num_texts, num_videos]`` similarity scores (higher = more similar).
        text_to_video: ``[num_texts]`` index of each text's ground-truth video.
        chunk_size: texts processed per step; bounds extra memory to ``chunk_size x num_videos``.

    Returns:
        int64 tensor ``[num_texts]`` on the input's device (CPU for numpy input); useful for finding
        the queries a model gets wrong. Videos without captions are allowed here (they are simply never
        a ground truth).
    """
    _check_chunk_size(chunk_size)
    sim = _as_score_tensor(sim_t2v)
    idx = _as_index_tensor(text_to_video, sim.shape[0], sim.shape[1], sim.device)
    return _ranks_t2v(sim, idx, int(chunk_size))


def ranks_v2t(sim_t2v: ArrayLike, text_to_video: IndexLike, chunk_size: int = 1024) -> Tensor:
    """1-based video-to-text rank of each video, multi-caption (CLIP4Clip) protocol, pessimistic ties.

    Takes the same *text x video* matrix as :func:`ranks_t2v` (not its transpose) so callers cannot mix
    up orientations. Each video's caption group is scored by its best caption; see the module docstring.

    Returns:
        int64 tensor ``[num_videos]`` on the input's device.

    Raises:
        ValueError: if some video has no caption (its rank would be undefined), or on malformed inputs.
    """
    _check_chunk_size(chunk_size)
    sim = _as_score_tensor(sim_t2v)
    idx = _as_index_tensor(text_to_video, sim.shape[0], sim.shape[1], sim.device)
    _check_every_video_has_caption(idx, sim.shape[1])
    return _ranks_v2t(sim, idx, int(chunk_size))


def summarize_ranks(ranks: ArrayLike | Sequence[int], prefix: str) -> dict[str, float]:
    """Turn 1-based ranks into ``{prefix}_R1/_R5/_R10`` (percent), ``{prefix}_MdR`` and ``{prefix}_MnR``.

    The median is ``numpy.median`` (mean of the two middle ranks for an even count), matching
    CLIP4Clip's reporting, rather than ``torch.median`` which returns the lower middle value.
    """
    if isinstance(ranks, Tensor):
        r = ranks.detach().cpu().to(torch.float64).numpy()
    else:
        r = np.asarray(ranks, dtype=np.float64)
    r = r.reshape(-1)
    if r.size == 0:
        raise ValueError(f"summarize_ranks({prefix!r}) got no ranks")
    if np.isnan(r).any() or (r < 1).any():
        raise ValueError(f"summarize_ranks({prefix!r}) expects 1-based ranks >= 1, got min {np.nanmin(r)}")
    out = {f"{prefix}_R{k}": float((r <= k).mean() * 100.0) for k in RECALL_KS}
    out[f"{prefix}_MdR"] = float(np.median(r))
    out[f"{prefix}_MnR"] = float(r.mean())
    return out


def retrieval_metrics(
    sim_t2v: ArrayLike, text_to_video: IndexLike, chunk_size: int = 1024
) -> dict[str, float]:
    """All standard retrieval metrics for a text x video similarity matrix.

    Args:
        sim_t2v: ``[num_texts, num_videos]`` scores; any float dtype (compared in float32/float64),
            CPU or CUDA (computed on that device).
        text_to_video: ``[num_texts]`` ground-truth video index of each text. Every video needs at
            least one caption, since v2t is computed too.
        chunk_size: texts (and videos) processed per step, bounding peak extra memory.

    Returns:
        ``t2v_R1, t2v_R5, t2v_R10, t2v_MdR, t2v_MnR, v2t_R1, v2t_R5, v2t_R10, v2t_MdR, v2t_MnR``,
        ``rsum`` (sum of the six R@K, the usual model-selection number) and ``num_texts``,
        ``num_videos`` (so logged numbers say which split size they came from), all Python floats.
    """
    _check_chunk_size(chunk_size)
    sim = _as_score_tensor(sim_t2v)
    num_texts, num_videos = sim.shape
    idx = _as_index_tensor(text_to_video, num_texts, num_videos, sim.device)
    _check_every_video_has_caption(idx, num_videos)
    out = summarize_ranks(_ranks_t2v(sim, idx, int(chunk_size)), "t2v")
    out.update(summarize_ranks(_ranks_v2t(sim, idx, int(chunk_size)), "v2t"))
    out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in RECALL_KS))
    out["num_texts"] = float(num_texts)
    out["num_videos"] = float(num_videos)
    return out
