"""MSVD, VATEX (both annotation layouts) and DiDeMo through the CLI: fit -> test on fake data in the exact
public layouts; metrics.json counts every query of the split (MSVD/VATEX every caption, DiDeMo paragraphs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
