"""datamodules.msvd: MSVD's annotation layout, its splits and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules import MSVD
from tests.datamodule_helpers import SMALL, CopyOf
from tests.fake_datasets import make_fake_msvd


def test_split_id_absent_from_annotations(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    with (root / "test_list.txt").open("a") as fh:
        fh.write("ghost_clip_1_2\n")
    with pytest.raises(ValueError, match=r"raw-captions\.pkl: 1 video\(s\) of split 'test' \(.*test_list\.txt\) are "
                                         r"absent from the annotations \(first: \['ghost_clip_1_2'\]\)"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_msvd_joins_token_lists_and_counts_splits(tmp_path: Path) -> None:
    counts = make_fake_msvd(tmp_path)
    dm = MSVD(root=str(tmp_path), num_frames=4, image_size=32, num_workers=0)
    dm.setup("fit")
    dm.setup("test")
    for split in ("train", "val", "test"):
        assert len(dm.splits[split].videos) == counts[split]["videos"]
        assert len(dm.splits[split].texts) == counts[split]["texts"]
    assert dm.splits["test"].texts[0].text == "a red square slides take 0 clip 6"
    assert dm.splits["test"].videos[0].path.name == "clip06_42_47.avi"
