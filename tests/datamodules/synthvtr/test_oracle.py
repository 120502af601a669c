"""The oracle: the retrieval ceiling set by caption ambiguity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules.synthvtr import (
    SynthVTRConfig,
    build_synthvtr,
    load_caption_facts,
    load_video_facts,
    oracle_recall,
)
from tests.datamodules.synthvtr.conftest import N_TEST


def test_oracle_recall_hand_made():
    video_facts = {"v1": {"a"}, "v2": {"a", "b"}, "v3": {"a", "b", "c"}, "train": {"a", "b", "c"}}
    captions = [("v1", {"a"}), ("v2", {"a", "b"}), ("v3", {"c"}), ("train", {"a"})]
    out = oracle_recall(captions, video_facts, ["v1", "v2", "v3"], ks=(1, 2, 5))
    # consistent test videos: 3, 2 and 1; the train caption is ignored
    assert out["num_queries"] == 3 and out["num_videos"] == 3
    assert out["R@1"] == pytest.approx(100 * (1 / 3 + 1 / 2 + 1) / 3, abs=1e-3)
    assert out["R@2"] == pytest.approx(100 * (2 / 3 + 1 + 1) / 3, abs=1e-3)
    assert out["R@5"] == pytest.approx(100.0)
    assert out["mean_consistent"] == pytest.approx(2.0)
    assert out["unique_pct"] == pytest.approx(100 / 3, abs=1e-3)
    with pytest.raises(ValueError, match="lacks"):
        oracle_recall([("v1", {"b"})], video_facts, ["v1", "v2"])


def test_oracle_file_matches_recomputation(tiny_root: Path):
    saved = json.loads((tiny_root / "synthvtr" / "oracle.json").read_text())
    test_ids = [v["video_id"] for v in json.loads((tiny_root / "MSRVTT_data.json").read_text())["videos"]
                if v["split"] == "test"]
    again = oracle_recall(load_caption_facts(tiny_root), load_video_facts(tiny_root), test_ids)
    assert {k: saved[k] for k in again} == again
    assert 0 < saved["R@1"] <= saved["R@5"] <= saved["R@10"] <= 100
    assert saved["first_caption"]["num_queries"] == N_TEST


def test_detail_raises_the_ceiling():
    r1 = [build_synthvtr(SynthVTRConfig(num_families=40, test_families=20, detail=d)).oracle()["R@1"]
          for d in (1, 2, 3)]
    assert r1[0] < r1[1] < r1[2]
