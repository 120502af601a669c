"""datamodules.base: VideoTextDataModule's checks of the data root, video folder, manifest and missing or
undecodable videos (refused with a threshold, or skipped and counted through a whole run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datamodules import MSVD, VATEX
from main import main
from tests.datamodule_helpers import SMALL, CopyOf
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import csv_logger


def test_missing_video_names_first_ids_and_threshold(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    victim = (root / "test_list.txt").read_text().split()[1]
    (root / "videos" / f"{victim}.mp4").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of 3 videos of split 'test' are missing or unreadable under "
                                                rf".*videos \(first: \['{victim}'\]\).*max_missing_fraction.*"
                                                r"python -m experiments\.prepare vatex"):
        VATEX(root=str(root), **SMALL).setup("test")
    dm = VATEX(root=str(root), max_missing_fraction=0.5, **SMALL)
    dm.setup("test")
    facts = dm.describe("test")
    assert facts["missing_video_ids"] == [victim] and facts["num_texts_dropped_with_missing_videos"] == 10


def test_config_pointing_at_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MSVD: data root .*no_such_dir does not exist; set "
                                                r"data\.init_args\.root"):
        main(["fit", "--config", str(CONF), "--data.class_path", "MSVD", "--data.init_args.root",
              str(tmp_path / "no_such_dir"), "--trainer.logger", "false"])


def test_missing_video_dir(copy_of: CopyOf) -> None:
    root = copy_of("vatex")
    with pytest.raises(FileNotFoundError, match=r"VATEX: video_dir .*clips does not exist"):
        VATEX(root=str(root), video_dir="clips", **SMALL).setup("test")


def test_manifest_unreadable_counts_as_missing(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    victim = (root / "test_list.txt").read_text().split()[2]
    manifest = {"dataset": "msvd", "video_dir": str(root / "YouTubeClips"),
                "videos": {victim: {"status": "unreadable", "error": "moov atom not found"}}}
    (root / "vtr_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=rf"first: \['{victim}'\].*manifest: .*vtr_manifest\.json"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_decode_failures_are_skipped_counted_and_reported(copy_of: CopyOf, tmp_path: Path) -> None:
    """on_decode_error=skip: a corrupt training clip and a corrupt test clip are dropped (not zero-filled),
    counted, and metrics.json says the evaluation covered 2 of 3 test videos."""
    root = copy_of("msrvtt")
    for vid in ("video1", "video5"):  # video5 is a test video (4 train, 3 test)
        (root / "videos" / "all" / f"{vid}.mp4").write_bytes(b"garbage" * 100)
    cli = main(["fit", "--config", str(CONF), "--data.init_args.root", str(root),
                "--data.init_args.on_decode_error", "skip", "--data.init_args.one_caption_per_video", "true",
                # this fake set has 4 training videos: select on the test split so all of them (video1 too) train
                "--data.init_args.val_protocol", "test",
                "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(tmp_path, "skip")])
    record = json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())
    assert record["num_videos"] == 2 and record["num_texts"] == 2
    assert record["metrics"]["num_videos_failed"] == 1 and record["metrics"]["num_texts_unscored"] == 1
    data = record["data"]
    assert data["num_videos_failed"] == 1 and data["failed_video_ids"] == ["video5"]
    assert data["num_videos_evaluated"] == 2 and data["num_videos_listed"] == 3
    assert data["train_decode_failures"] == 1 and data["train_failed_video_ids"] == ["video1"]
