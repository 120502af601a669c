"""datamodules.didemo: DiDeMo's paragraphs and frame budget."""

from __future__ import annotations

from pathlib import Path

from datamodules import DiDeMo
from tests.fake_datasets import make_fake_didemo


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
