"""lightning_modules.captioning.captioner: the requests a predict batch turns into, the records it comes back as,
the ``{text}`` prompt and its admissible texts, and the settings refused up front. Runs through ``predict`` with
every backend are in test_backends.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from datamodules.batch import VideoBatch
from lightning_modules.captioning.backends.base import CaptionBackend, CaptionOutput, CaptionRequest
from lightning_modules.captioning.captioner import Captioner


class Echo(CaptionBackend):
    """Answers each request with its video, frames and prompt, so a record shows which request it came from."""

    def __init__(self, needs_pixels: bool = False) -> None:
        self.needs_pixels = needs_pixels
        self.seen: list[CaptionRequest] = []
        self.calls = 0

    @property
    def model_name(self) -> str:
        return "echo"

    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        self.calls += 1
        self.seen.extend(requests)
        return [CaptionOutput([f"{r.video_id}@{r.frame_indices}#{i}:{r.prompt}" for i in range(r.num_captions)],
                              {"n": [i for i in range(r.num_captions)]}) for r in requests]


def _batch(frames: bool = False) -> VideoBatch:
    pixels = torch.randint(0, 255, (2, 4, 3, 8, 8), dtype=torch.uint8) if frames else None
    return VideoBatch(index=torch.arange(2), mask=torch.ones(2, 4, dtype=torch.bool), video_ids=["v0", "v1"],
                      frames=pixels, aux={"frame_indices": [[0, 5, 10, 15], [1, 2, 3, 4]]})


def _attached(captioner: Captioner, entries: dict[str, list[tuple[str, str, str]]]) -> Captioner:
    """The captioner as a Trainer holds it: its data module answers ``video_text_entries``."""
    dm = SimpleNamespace(video_text_entries=lambda vid: entries.get(vid, []))
    captioner.trainer = SimpleNamespace(datamodule=dm)  # type: ignore[assignment]  (the public setter)
    return captioner


def test_narration_asks_once_per_frame_and_records_the_frames_in_order() -> None:
    backend = Echo()
    records = Captioner(backend, kind="narration", prompt="describe", requests_per_call=3).caption_batch(_batch())
    assert len(backend.seen) == 8 and backend.calls == 3  # 8 one-frame requests, three at a time
    assert [r["frame_indices"] for r in records] == [[0, 5, 10, 15], [1, 2, 3, 4]]
    assert records[0]["captions"] == [f"v0@[{f}]#0:describe" for f in (0, 5, 10, 15)]
    assert records[1]["n"] == [0, 0, 0, 0] and records[0]["model"] == "echo" and records[0]["kind"] == "narration"


def test_multi_asks_once_per_video_for_k_captions_from_evenly_spread_frames() -> None:
    backend = Echo()
    captioner = Captioner(backend, kind="multi", prompt="list", num_captions=3, max_frames_per_video=2)
    records = captioner.caption_batch(_batch())
    assert [(r.video_id, r.num_captions, r.frame_indices) for r in backend.seen] == [("v0", 3, [0, 15]),
                                                                                     ("v1", 3, [1, 4])]
    assert records[0]["source_frames"] == [0, 15] and len(records[0]["captions"]) == 3
    assert Captioner(Echo(), kind="supplement", num_captions=7).num_captions == 1  # only multi asks for several


def test_a_backend_that_looks_gets_the_frames_and_a_grid_is_one_image() -> None:
    backend = Echo(needs_pixels=True)
    Captioner(backend, kind="supplement", prompt="p", frame_layout="grid").caption_batch(_batch(frames=True))
    assert [len(r.images) for r in backend.seen] == [1, 1]
    with pytest.raises(ValueError, match="Echo needs pixels but the batch has no frames"):
        Captioner(Echo(needs_pixels=True), kind="supplement", prompt="p").caption_batch(_batch())


def test_a_text_prompt_is_filled_from_training_texts_only_unless_any_is_asked() -> None:
    entries = {"v0": [("test", "t9", "a test query"), ("train", "t1", "a red ball")],
               "v1": [("test", "t8", "another test query")]}
    captioner = _attached(Captioner(Echo(), kind="supplement", prompt="beyond: {text}",
                                    fallback_prompt="describe the video"), entries)
    records = captioner.caption_batch(_batch())
    assert records[0]["captions"] == ["v0@[0, 5, 10, 15]#0:beyond: a red ball"]
    assert (records[0]["context_split"], records[0]["context_text_id"]) == ("train", "t1")
    assert records[1]["captions"] == ["v1@[1, 2, 3, 4]#0:describe the video"]  # only a test text: the fallback
    assert records[1]["fallback_prompt"] == "describe the video" and "context_text" not in records[1]
    loose = _attached(Captioner(Echo(), kind="supplement", prompt="beyond: {text}", text_context="any"), entries)
    assert loose.prompt_for("v1") == ("beyond: another test query", "another test query")


def test_a_text_prompt_without_an_admissible_text_or_any_text_names_the_video() -> None:
    strict = _attached(Captioner(Echo(), kind="supplement", prompt="beyond: {text}"), {"v1": [("test", "t", "q")]})
    with pytest.raises(ValueError, match=r"video 'v1' has no training-split text .* set model\.init_args\.fallback"):
        strict.prompt_for("v1")
    with pytest.raises(ValueError, match="video 'v7' has no annotated text"):
        strict.prompt_for("v7")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "story"}, "kind must be narration, multi or supplement"),
    ({"text_context": "test"}, "text_context must be training or any"),
    ({"fallback_prompt": "use {text}"}, "fallback_prompt must be a non-empty instruction without {text}"),
    ({"prompt": "  "}, "prompt must not be empty"),
])
def test_bad_settings_are_refused_naming_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Captioner(Echo(), **kwargs)


def test_the_prompt_file_replaces_the_prompt_and_must_exist_and_say_something(tmp_path: Path) -> None:
    best = tmp_path / "best_prompt.txt"
    best.write_text("  describe every object \n")
    assert Captioner(Echo(), prompt_file=str(best)).prompt == "describe every object"
    with pytest.raises(FileNotFoundError, match=r"python -m experiments\.csi"):
        Captioner(Echo(), prompt_file=str(tmp_path / "missing.txt"))
    best.write_text("\n")
    with pytest.raises(ValueError, match=r"best_prompt\.txt is empty"):
        Captioner(Echo(), prompt_file=str(best))
