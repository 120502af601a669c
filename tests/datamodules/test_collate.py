"""datamodules.collate: dataset items into typed batches; failed videos dropped from both sides of a pair, cached
caption states padded, predict frames padded and masked."""

from __future__ import annotations

from typing import Any

import torch

from datamodules.batch import MultiCaptions, SupplementCaptions
from datamodules.collate import collate_aux, collate_pairs, collate_predict, collate_texts, collate_videos


def _video(i: int, frames: int = 3, **extra: Any) -> dict[str, Any]:
    return {"video_index": i, "video_id": f"v{i}", "frames": torch.full((frames, 3, 2, 2), i, dtype=torch.uint8),
            "mask": torch.ones(frames, dtype=torch.bool), **extra}


def _failed(i: int) -> dict[str, Any]:
    return {"video_index": i, "video_id": f"v{i}", "failed": "moov atom not found", "empty_shape": (3, 3, 2, 2)}


def test_texts_keep_their_indices_and_strings() -> None:
    batch = collate_texts([{"text_index": 4, "video_index": 1, "text": "a red ball"},
                           {"text_index": 7, "video_index": 0, "text": "a cat"}])
    assert batch.index.tolist() == [4, 7] and batch.video_index.tolist() == [1, 0]
    assert batch.texts == ["a red ball", "a cat"] and batch.cached_tokens is None


def test_a_failed_video_is_dropped_and_listed_and_an_all_failed_batch_is_empty() -> None:
    batch = collate_videos([_video(0), _failed(5), _video(2)])
    assert batch.index.tolist() == [0, 2] and batch.video_ids == ["v0", "v2"]
    assert batch.failed == [(5, "v5", "moov atom not found")]
    assert batch.frames is not None and batch.frames[1].unique().tolist() == [2]
    empty = collate_videos([_failed(1), _failed(2)])
    assert empty.frames is not None and empty.frames.shape == (0, 3, 3, 2, 2) and empty.mask.shape == (0, 3)
    assert len(empty.failed) == 2


def test_pairs_drop_the_text_of_a_failed_video_too() -> None:
    items = [{**_video(0), "text_index": 0, "text": "first"}, {**_failed(1), "text_index": 1, "text": "second"}]
    pair = collate_pairs(items)
    assert pair.text.texts == ["first"] and pair.video.video_ids == ["v0"] and len(pair) == 1


def test_cached_caption_states_are_zero_padded_to_the_longest_list() -> None:
    items = [{"aux": {"multi": ["a", "b"]}, "aux_cached": {"multi": (torch.ones(2, 4, 3), torch.ones(2, 4).bool())}},
             {"aux": {"multi": ["c"]}, "aux_cached": {"multi": (torch.ones(1, 4, 3), torch.ones(1, 4).bool())}}]
    aux = collate_aux("multi", items)
    assert isinstance(aux, MultiCaptions) and aux.captions == [["a", "b"], ["c"]]
    assert aux.tokens is not None and aux.mask is not None and aux.tokens.shape == (2, 2, 4, 3)
    assert aux.tokens[1, 1].abs().sum() == 0 and not aux.mask[1, 1].any() and aux.mask[1, 0].all()
    supplement = collate_aux("supplement", [{"aux": {"supplement": ["s"]}, "aux_prompt": {"supplement": "A"}}])
    assert isinstance(supplement, SupplementCaptions) and supplement.prompts == ["A"] and supplement.tokens is None


def test_predict_frames_are_padded_and_masked_and_carry_their_frame_indices() -> None:
    batch = collate_predict([{**_video(0, frames=2), "frame_indices": [0, 8]},
                             {**_video(1, frames=4), "frame_indices": [0, 3, 6, 9]}])
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.frames is not None and batch.frames.shape == (2, 4, 3, 2, 2)
    assert batch.frames[0, 2:].abs().sum() == 0 and batch.aux["frame_indices"] == [[0, 8], [0, 3, 6, 9]]
    without_pixels = collate_predict([{"video_index": 3, "video_id": "v3", "frame_indices": [1]}])
    assert without_pixels.frames is None and without_pixels.video_ids == ["v3"]
