"""datamodules.folder: the videos of one's own folder and their ids; the folder serves predict only. Captioning such
a folder and indexing it run in tests/experiments/test_search.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.folder import VideoFolder, list_videos


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_ids_are_paths_without_extension_in_path_order_and_hidden_files_are_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "trips/b.MP4", "a.avi", "trips/a.mkv", "notes.txt", ".cache/x.mp4", "trips/.hidden.mp4")
    entries = list_videos(tmp_path)
    assert [e.video_id for e in entries] == ["a", "trips/a", "trips/b"]
    assert entries[2].path == (tmp_path / "trips" / "b.MP4").resolve()


def test_two_files_with_one_id_are_refused_naming_both(tmp_path: Path) -> None:
    _touch(tmp_path, "clip.mp4", "clip.avi")
    with pytest.raises(ValueError, match=r"clip\.avi and .*clip\.mp4 would share the id 'clip'; rename one"):
        list_videos(tmp_path)


def test_a_missing_or_videoless_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"video folder .*nowhere does not exist"):
        list_videos(tmp_path / "nowhere")
    _touch(tmp_path, "readme.txt")
    with pytest.raises(FileNotFoundError, match="holds no video files"):
        list_videos(tmp_path)


def test_the_folder_serves_predict_and_refuses_training_or_testing(tmp_path: Path) -> None:
    _touch(tmp_path, "x.mp4", "sub/y.mp4")
    dm = VideoFolder(root=str(tmp_path), num_workers=0)
    dm.setup("predict")
    assert [e.video_id for e in dm.predict_videos] == ["sub/y", "x"]
    for stage, split in (("fit", "train"), ("test", "test")):
        with pytest.raises(ValueError, match=f"has no annotations, so no '{split}' split"):
            dm.setup(stage)
