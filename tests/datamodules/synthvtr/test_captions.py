"""Per-frame metadata and captions: consistent with the specs and with their video's facts."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from datamodules.synthvtr import load_caption_facts, load_frame_metadata, load_video_facts
from datamodules.synthvtr.captions import position_word
from tests.datamodules.synthvtr.conftest import N_VIDEOS, TINY, read_specs


def test_captions_are_consistent_with_their_video(tiny_root: Path):
    captions, facts = load_caption_facts(tiny_root), load_video_facts(tiny_root)
    assert len(captions) == N_VIDEOS * TINY.captions_per_video and len(facts) == N_VIDEOS
    per_video = defaultdict(int)
    for c in captions:
        per_video[c.video_id] += 1
        assert c.facts and c.facts <= facts[c.video_id], (c.caption, sorted(c.facts - facts[c.video_id]))
        assert c.caption == c.caption.lower() and "," not in c.caption and c.caption.strip() == c.caption
    assert set(per_video.values()) == {TINY.captions_per_video}


def test_frame_metadata(tiny_root: Path):
    frames = load_frame_metadata(tiny_root)
    specs = {s["video_id"]: s for s in read_specs(tiny_root)}
    assert set(frames) == set(specs)
    for vid, per_frame in frames.items():
        spec = specs[vid]
        assert len(per_frame) == TINY.num_frames
        counts = []
        for f, fr in enumerate(per_frame):
            assert fr["frame"] == f and fr["background"] == spec["background"]
            counts.append(len(fr["objects"]))
            for o in fr["objects"]:
                assert set(o) == {"colour", "shape", "x", "y", "r", "pos", "motion"}
                assert o["r"] <= o["x"] <= 1 - o["r"] and o["r"] <= o["y"] <= 1 - o["r"]
                assert o["pos"] == position_word(o["x"], o["y"])
                assert not (o["shape"] == "circle" and o["motion"] == "spin")
        n, kind = len(spec["objects"]), spec["event"]["kind"]
        expected = {"appear": (n - 1, n), "disappear": (n, n - 1), "change": (n, n)}[kind]
        assert (counts[0], counts[-1]) == expected
        if kind == "change":
            target = spec["objects"][spec["event"]["obj"]]
            last = {(o["colour"], o["shape"]) for o in per_frame[-1]["objects"]}
            assert (spec["event"]["to_colour"], target["shape"]) in last
