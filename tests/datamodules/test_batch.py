"""datamodules.batch: frame normalisation, caption slots, and the typed batches moving every tensor they hold."""

from __future__ import annotations

import torch

from datamodules.batch import (
    AUX_CAPTION_TYPES,
    MultiCaptions,
    NarrationCaptions,
    PairBatch,
    SupplementCaptions,
    TextBatch,
    VideoBatch,
    normalize_frames,
)


def test_normalize_frames_is_x_over_255_minus_mean_over_std_per_channel() -> None:
    frames = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 3, 1, 1).expand(2, 4, 3, 2, 2)
    out = normalize_frames(frames, mean=(0.0, 0.1, 0.5), std=(1.0, 0.5, 0.25))
    assert out.dtype == torch.float32 and out.shape == (2, 4, 3, 2, 2)
    expected = torch.tensor([0.0, (0.2 - 0.1) / 0.5, (1.0 - 0.5) / 0.25])
    torch.testing.assert_close(out[1, 2, :, 1, 0], expected)


def test_caption_slots_and_presence_by_kind() -> None:
    multi = MultiCaptions([["a", "b", "c"], [], ["d"]])
    assert multi.slots(num_frames=8) == 3  # the longest list, not the frames
    assert multi.present(3).tolist() == [[True, True, True], [False, False, False], [True, False, False]]
    assert NarrationCaptions([["x"] * 2, ["y"] * 4]).slots(num_frames=4) == 4  # one slot per fed frame
    cached = MultiCaptions([["a"]], tokens=torch.zeros(1, 5, 3, 2))
    assert cached.slots(num_frames=8) == 5  # the cached rows
    assert MultiCaptions([]).slots(num_frames=8) == 0
    assert {kind: cls.__name__ for kind, cls in AUX_CAPTION_TYPES.items()} == {
        "narration": "NarrationCaptions", "multi": "MultiCaptions", "supplement": "SupplementCaptions"}


def test_to_moves_every_tensor_of_nested_batches_and_keeps_the_rest() -> None:
    meta = torch.device("meta")  # a device every machine has: tensors moved there report it
    video = VideoBatch(index=torch.arange(2), mask=torch.ones(2, 3, dtype=torch.bool), video_ids=["a", "b"],
                       frames=torch.zeros(2, 3, 3, 4, 4, dtype=torch.uint8),
                       aux={"supplement": SupplementCaptions([["s"], ["t"]], tokens=torch.zeros(2, 1, 2, 2),
                                                             prompts=["p", "p"]),
                            "frame_indices": [[0, 1, 2], [0, 1, 2]]})
    text = TextBatch(index=torch.arange(2), video_index=torch.arange(2), texts=["q1", "q2"])
    pair = PairBatch(text=text, video=video).to(meta)
    assert len(pair) == len(text) == 2
    assert pair.video.frames.device == meta and pair.video.index.device == meta and pair.text.index.device == meta
    assert pair.video.aux["supplement"].tokens.device == meta and pair.video.aux["supplement"].mask is None
    assert pair.video.aux["supplement"].prompts == ["p", "p"] and pair.video.video_ids == ["a", "b"]
    assert pair.video.aux["frame_indices"] == [[0, 1, 2], [0, 1, 2]]

