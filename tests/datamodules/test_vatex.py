"""datamodules.vatex: VATEX's two annotation layouts and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules import VATEX
from tests.datamodule_helpers import SMALL, CopyOf
from tests.fake_datasets import make_fake_vatex


def test_empty_caption(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    data = json.loads((root / "vatex_data.json").read_text())
    vid = (root / "train_list.txt").read_text().split()[2]
    data[vid]["enCap"][3] = "  "
    (root / "vatex_data.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"vatex_data\.json: empty caption #3 of video '{vid}' \(split 'train'\)"):
        VATEX(root=str(root), **SMALL).setup("fit")


def test_official_vatex_entry_without_encap(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    (root / "vatex_data.json").unlink()
    (root / "vatex_training_v1.0.json").write_text(json.dumps([{"videoID": "x", "chCap": ["c"]}]))
    (root / "vatex_validation_v1.0.json").write_text("[]")
    with pytest.raises(ValueError, match=r"vatex_training_v1\.0\.json: entry 0 lacks 'videoID' or 'enCap'"):
        VATEX(root=str(root), **SMALL).setup("test")


def test_vatex_layouts_agree(tmp_path: Path) -> None:
    make_fake_vatex(tmp_path / "a")
    make_fake_vatex(tmp_path / "b", "official")
    splits = []
    for sub in ("a", "b"):
        dm = VATEX(root=str(tmp_path / sub), num_frames=4, image_size=32, num_workers=0)
        dm.setup("test")
        splits.append(dm.splits["test"])
    assert [t.text for t in splits[0].texts] == [t.text for t in splits[1].texts]
    assert len(splits[0].texts) == 30 and splits[0].info["annotations"] == "vatex_data.json"
    assert splits[1].info["annotations"] == "vatex_training_v1.0.json"
