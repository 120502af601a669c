"""Collation of dataset items (``datamodules/datasets.py``) into the typed batches of ``datamodules/batch.py``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from datamodules.batch import AUX_CAPTION_TYPES, AuxCaptions, PairBatch, SupplementCaptions, TextBatch, VideoBatch


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
    aux: dict[str, AuxCaptions] = {}
    if good and "aux" in good[0]:
        aux = {name: collate_aux(name, good) for name in good[0]["aux"]}
    return VideoBatch(index=torch.tensor([it["video_index"] for it in good], dtype=torch.long), mask=mask,
                      video_ids=[it["video_id"] for it in good], frames=frames,
                      cached_frames=_stack(good, "cached_frames"), aux=aux, failed=failed,
                      augmented_frames=_stack(good, "augmented_frames"),
                      cached_augmented=_stack(good, "cached_augmented"),
                      augmentations=[list(it.get("augmentations", [])) for it in good])


def _pad_stack(rows: list[Tensor]) -> Tensor:
    """Stack ``[N_i, ...]`` tensors into ``[B, max N_i, ...]``, zero rows after each one's end."""
    longest = max(r.shape[0] for r in rows)
    if all(r.shape[0] == longest for r in rows):
        return torch.stack(rows)
    out = rows[0].new_zeros((len(rows), longest, *rows[0].shape[1:]))
    for i, r in enumerate(rows):
        out[i, :r.shape[0]] = r
    return out


def collate_aux(kind: str, items: list[dict[str, Any]]) -> AuxCaptions:
    """The ``kind`` captions of the items as their typed ``AuxCaptions`` (with cached trunk states if present)."""
    tokens = mask = None
    if "aux_cached" in items[0]:  # frozen text trunk: the captions' states from the cache
        tokens = _pad_stack([it["aux_cached"][kind][0] for it in items])
        mask = _pad_stack([it["aux_cached"][kind][1] for it in items])
    captions = [it["aux"][kind] for it in items]
    if kind == SupplementCaptions.kind:
        return SupplementCaptions(captions, tokens, mask, prompts=[it["aux_prompt"][kind] for it in items])
    return AUX_CAPTION_TYPES[kind](captions, tokens, mask)


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
