"""Tiled scoring: a method's ``similarity`` evaluated over (text chunk x video chunk) tiles into full matrices.

What evaluation (``lightning_modules.evaluation``), search re-ranking (``lightning_modules.search_hooks``), QB-Norm's
bank (``callbacks.test_time_postprocessing``) and the benchmarks share: the feature-dict types, the float32 cast
every evaluation score goes through, and ``score_tiles``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Features", "Scores", "as_float32", "score_tiles", "slice_features"]

# per-item features of a batch, every tensor with the batch on its first axis (``encode_text``/``encode_video``)
Features = dict[str, Tensor]
# a similarity's result: one matrix, or several named views (NarVid's query-video and query-narration scores)
Scores = Tensor | dict[str, Tensor]


def as_float32(feats: Features) -> Features:
    """Floating features in float32, others (masks, indices) unchanged.

    Under ``bf16-mixed`` encoders return a mix of bfloat16 (autocast matmuls) and float32 (LayerNorm)
    tensors, while evaluation scoring runs outside autocast: the similarity would then see mixed dtypes,
    and bfloat16 scores (8 bits of mantissa) tie with the ground truth often enough to move R@1. Casting
    once, right after encoding, makes every evaluation score a float32 computation.
    """
    return {k: v.float() if v.is_floating_point() else v for k, v in feats.items()}


def slice_features(feats: Features, start: int, stop: int) -> Features:
    """Rows ``start:stop`` of every feature tensor."""
    return {k: v[start:stop] for k, v in feats.items()}


@torch.no_grad()
def score_tiles(similarity: Callable[[Features, Features], Scores], text_feats: Features, video_feats: Features,
                text_chunk: int, video_chunk: int, text_order: Tensor | None = None) -> Scores:
    """Evaluate ``similarity`` over (text chunk x video chunk) tiles into CPU float32 matrices.

    Peak memory is that of one tile, so a query-dependent similarity whose intermediate grows with
    texts x videos x frames x words stays bounded by the chunk sizes. A similarity that returns several
    named views (a dict of tiles, e.g. NarVid's query-video and query-narration scores) gets one
    full matrix per view. ``text_order`` (a permutation of the texts) groups texts into tiles in that order,
    e.g. queries of similar length together; the rows of the result stay in the input order.
    """
    n_t = next(iter(text_feats.values())).shape[0]
    n_v = next(iter(video_feats.values())).shape[0]
    if text_order is not None:
        if text_order.shape != (n_t,) or not torch.equal(torch.sort(text_order.cpu()).values, torch.arange(n_t)):
            raise ValueError(f"score_tiles: text_order must be a permutation of the {n_t} texts")
        text_feats = {k: v[text_order.to(v.device)] for k, v in text_feats.items()}
    out: dict[str, Tensor] = {}
    single = False
    for ts in range(0, n_t, text_chunk):
        t_chunk = slice_features(text_feats, ts, ts + text_chunk)
        for vs in range(0, n_v, video_chunk):
            tile = similarity(t_chunk, slice_features(video_feats, vs, vs + video_chunk))
            if isinstance(tile, Tensor):
                single, tile = True, {"": tile}
            for name, value in tile.items():
                if name not in out:
                    out[name] = torch.empty(n_t, n_v, dtype=torch.float32)
                out[name][ts:ts + text_chunk, vs:vs + video_chunk] = value.float().cpu()
    if text_order is not None:  # back to the input order
        inverse = torch.empty_like(text_order, device="cpu")
        inverse[text_order.cpu()] = torch.arange(n_t)
        out = {name: value[inverse] for name, value in out.items()}
    return out[""] if single else out
