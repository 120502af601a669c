"""experiments.care_dpo.caption_quality: the caption measures read captions back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.care_dpo.caption_quality import caption_quality
from tests.caption_helpers import tiny_synth
from tests.care_dpo_helpers import synthvtr_data


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SynthVTR (no captioner or scorer: the measures read caption files)."""
    base = tmp_path_factory.mktemp("care_quality")
    tiny_synth(base)
    return base


def test_caption_measures_read_the_captions_back(synth: Path, tmp_path: Path) -> None:
    data = synthvtr_data(synth)
    facts = {json.loads(line)["video_id"]: json.loads(line)["facts"]
             for line in (data.root / "synthvtr" / "video_facts.jsonl").read_text().splitlines()}
    data.setup("test")
    ids = [v.video_id for v in data.splits["test"].videos]
    texts = {v: data.video_texts(v)[0] for v in ids}
    oracle = tmp_path / "oracle.jsonl"   # each video captioned by its own first ground-truth text
    oracle.write_text("".join(json.dumps({"video_id": v, "kind": "supplement", "prompt": "p",
                                          "captions": [texts[v]]}) + "\n" for v in ids))
    quality = caption_quality(data, oracle)
    assert quality["num_videos"] == 2 and quality["family_size"] == 2.0
    assert quality["attribute_precision"] == 1.0  # ground-truth texts say nothing false
    same = tmp_path / "same.jsonl"               # one caption for every video: no video can be told apart
    same.write_text("".join(json.dumps({"video_id": v, "kind": "supplement", "prompt": "p",
                                        "captions": ["a circle"]}) + "\n" for v in ids))
    blind = caption_quality(data, same)
    assert blind["distinct_captions"] == 0.0 and blind["caption_words"] == 2.0
    assert set(facts) >= set(ids)
