"""Collation of dataset items (``datamodules/datasets.py``) into the typed batches of ``datamodules/batch.py``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from datamodules.batch import PairBatch, TextBatch, VideoBatch


def _stack(items: list[dict[str, Any]], key: str) -> Tensor | None:
    if not items or key not in items[0]:
        return None
    return torch.stack([it[key] for it in items])


def _split_failed(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]]]:
    good = [it for it in items if "failed" not in it]
    failed = [(int(it["video_index"]), str(it["video_id"]), str(it["failed"])) for it in items if "failed" in it]
    return good, failed


def collate_texts(items: list[dict[str, Any]]) -> TextBatch:
    """List of text items -> ``TextBatch``."""
    return TextBatch(index=torch.tensor([it["text_index"] for it in items], dtype=torch.long),
                     video_index=torch.tensor([it["video_index"] for it in items], dtype=torch.long),
                     texts=[it["text"] for it in items],
                     cached_tokens=_stack(items, "cached_tokens"), cached_mask=_stack(items, "cached_mask"))


def collate_videos(items: list[dict[str, Any]]) -> VideoBatch:
    """List of video items -> ``VideoBatch``; items that failed to decode are dropped and listed in ``failed``."""
    good, failed = _split_failed(items)
    if good:
        frames, mask = _stack(good, "frames"), _stack(good, "mask")
    else:  # every video of the batch failed: an empty batch the model skips
        t, c, h, w = items[0]["empty_shape"]
        frames, mask = torch.zeros((0, t, c, h, w), dtype=torch.uint8), torch.zeros((0, t), dtype=torch.bool)
    aux: dict[str, list[list[str]]] = {}
    if good and "aux" in good[0]:
        aux = {name: [it["aux"][name] for it in good] for name in good[0]["aux"]}
    if good and "aux_cached" in good[0]:  # frozen text trunk: per-frame caption states from the cache
        for name in good[0]["aux_cached"]:
            aux[f"{name}_cached_tokens"] = torch.stack([it["aux_cached"][name][0] for it in good])
            aux[f"{name}_cached_mask"] = torch.stack([it["aux_cached"][name][1] for it in good])
    return VideoBatch(index=torch.tensor([it["video_index"] for it in good], dtype=torch.long), mask=mask,
                      video_ids=[it["video_id"] for it in good], frames=frames,
                      cached_frames=_stack(good, "cached_frames"), aux=aux, failed=failed)


def collate_pairs(items: list[dict[str, Any]]) -> PairBatch:
    """List of pair items -> ``PairBatch`` (a pair whose video failed to decode is dropped from both sides)."""
    good = [it for it in items if "failed" not in it]
    video = collate_videos(items)
    return PairBatch(text=collate_texts(good), video=video)



def collate_predict(items: list[dict[str, Any]]) -> VideoBatch:
    """Predict items -> ``VideoBatch`` (frames padded + masked; ``aux["frame_indices"]`` per video)."""
    lengths = [len(it["frame_indices"]) for it in items]
    t_max = max(lengths)
    mask = torch.zeros(len(items), t_max, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, :n] = True
    frames = None
    if "frames" in items[0]:
        first = items[0]["frames"]
        frames = first.new_zeros((len(items), t_max, *first.shape[1:]))
        for row, it in enumerate(items):
            frames[row, :it["frames"].shape[0]] = it["frames"]
    return VideoBatch(index=torch.tensor([it["video_index"] for it in items]), mask=mask,
                      video_ids=[it["video_id"] for it in items], frames=frames,
                      aux={"frame_indices": [it["frame_indices"] for it in items]})
