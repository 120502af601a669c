"""experiments.captions_synthvtr: what its report says of a caption store. The stores it writes (through the
simulated backend's predict runs) are tested in tests/lightning_modules/captioning/test_backends.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.captions_synthvtr import KINDS, summarize
from vtr.resources import configs_dir


def test_summary_counts_videos_captions_and_hallucinated_slots(tmp_path: Path) -> None:
    store = tmp_path / "multi.jsonl"
    records = [{"video_id": "v0", "captions": ["a red ball", "a blue box"], "hallucinated": [0, 2], "slots": [3, 3],
                "hallucination_rate": 0.2, "detail": 2},
               {"video_id": "v1", "captions": ["a star"], "hallucinated": [1], "slots": [2]}]
    store.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    summary = summarize(store)
    assert (summary["videos"], summary["unique_videos"], summary["captions"]) == (2, 2, 3)
    assert summary["captions_per_video"] == 1.5 and summary["hallucination_rate"] == 0.2 and summary["detail"] == 2
    assert summary["captions_with_a_hallucination_pct"] == pytest.approx(66.7)
    assert summary["hallucinated_slots_per_caption"] == 1.0 and summary["measured_slot_hallucination_rate"] == 0.375
    assert summary["example"] == {"video_id": "v0", "caption": "a red ball"}


def test_an_empty_store_summarises_to_zeros_and_every_kind_has_its_shipped_config(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    summary = summarize(tmp_path / "empty.jsonl")
    assert summary["videos"] == summary["captions"] == 0 and summary["example"]["video_id"] is None
    for kind in KINDS:
        assert (configs_dir() / "captioners" / f"synthvtr_{kind}.yaml").is_file(), kind
