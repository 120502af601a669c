"""A folder of one's own videos, without annotations: the videos ``python main.py predict`` captions (for a search
index of a method that reads captions, ``experiments/search``), and the listing the search indexer shares.

    python main.py predict --config configs/captioners/narration_llava.yaml \
        --data VideoFolder --data.init_args.root ~/my_videos --data.init_args.video_dir .

A video's id is its path relative to ``video_dir`` without the extension (``trips/a.mp4`` -> ``trips/a``), the id
caption stores and search indexes use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.annotations import Split, VideoEntry
from datamodules.base import VideoTextDataModule
from datamodules.readers import VIDEO_EXTENSIONS


def list_videos(folder: str | Path) -> list[VideoEntry]:
    """Every video file under ``folder`` (recursively), in path order, with its id."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    seen: dict[str, Path] = {}
    for path in files:
        video_id = path.relative_to(root).with_suffix("").as_posix()
        if video_id in seen:
            raise ValueError(f"{seen[video_id]} and {path} would share the id {video_id!r}; rename one of them")
        seen[video_id] = path
    if not seen:
        raise FileNotFoundError(f"video folder {root} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return [VideoEntry(video_id, path.resolve()) for video_id, path in seen.items()]


class VideoFolder(VideoTextDataModule):
    """Every video under ``root / video_dir``, for ``predict`` only (there are no texts to train or test on).

    Args:
        root: the folder (captions written by ``predict`` go under it, e.g. ``captions/narration_llava.jsonl``).
        video_dir: where the videos are, relative to ``root`` unless absolute (``.``: the root itself).
        **kwargs: ``VideoTextDataModule`` arguments (``num_frames``, ``image_size``, ``reader``, ...).
    """

    name = "videofolder"
    title = "video folder"

    def __init__(self, root: str, video_dir: str = ".", **kwargs: Any) -> None:
        kwargs.setdefault("manifest", None)  # no preparation manifest for one's own folder
        super().__init__(root, video_dir, **kwargs)

    def load_split(self, split: str) -> Split:
        raise ValueError(f"VideoFolder ({self.video_dir}) has no annotations, so no '{split}' split: it serves "
                         "python main.py predict (captioning); train and test on a dataset module")

    def setup(self, stage: str) -> None:
        if stage != "predict":
            self.load_split({"fit": "train", "validate": "val"}.get(stage, stage))
        self.predict_videos = list_videos(self.video_dir)
