"""MSVD, VATEX (both annotation layouts) and DiDeMo through the CLI: fit -> test on fake data in the exact
public layouts; metrics.json counts every query of the split (MSVD/VATEX every caption, DiDeMo paragraphs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules import MSVD, VATEX, DiDeMo
from main import main
from tests.fake_datasets import make_fake_didemo, make_fake_msvd, make_fake_vatex
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import assert_metrics_match_artifacts, csv_logger

CASES = {
    "msvd": ("MSVD", make_fake_msvd, "YouTubeClips", []),
    "vatex": ("VATEX", make_fake_vatex, "videos", []),
    "vatex_official": ("VATEX", lambda root: make_fake_vatex(root, "official"), "videos",
                       ["--data.init_args.annotation_layout", "official"]),
    "didemo": ("DiDeMo", make_fake_didemo, "videos", ["--data.init_args.num_frames", "6"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_test_counts_every_query(case: str, tmp_path: Path) -> None:
    class_path, make, video_dir, extra = CASES[case]
    root = tmp_path / case
    counts = make(root)
    cli = main(["fit", "--config", str(CONF), "--data.class_path", class_path, "--data.init_args.root", str(root),
                "--data.init_args.video_dir", video_dir, *extra, "--trainer.max_epochs", "1",
                "--trainer.logger", csv_logger(tmp_path, case)])
    test_dir = Path(cli.trainer.log_dir) / "test"
    record = assert_metrics_match_artifacts(test_dir)
    assert record["num_texts"] == counts["test"]["texts"]
    assert record["num_videos"] == counts["test"]["videos"]
    assert record["data"]["num_videos_failed"] == 0
    assert record["data"]["num_videos_evaluated"] == counts["test"]["videos"]
    assert record["data"]["dataset"] == class_path.lower()
    assert "validation split" in record["data"]["model_selection"]
    sim = np.load(test_dir / "sim_t2v.npy")
    assert sim.shape == (counts["test"]["texts"], counts["test"]["videos"])
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    assert sorted(set(gt)) == list(range(counts["test"]["videos"]))


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


def test_didemo_paragraphs_and_frame_budget(tmp_path: Path) -> None:
    make_fake_didemo(tmp_path)
    dm = DiDeMo(root=str(tmp_path), image_size=32, num_workers=0)
    assert dm.num_frames == 32 and dm.max_words == 64
    dm.setup("test")
    first = dm.splits["test"].texts[0]
    assert first.text == ("the red square moves part 0 of clip 6 the red square moves part 1 of clip 6")
    assert first.text_id == dm.splits["test"].videos[0].video_id == "1006@N06_5556.mp4"
    # a re-encoded copy may change the container: the id's extension is not required on disk
    video = dm.splits["test"].videos[1]
    video.path.rename(video.path.with_suffix(".mkv"))
    assert DiDeMo(root=str(tmp_path)).video_path(video.video_id).suffix == ".mkv"
