"""DiDeMo paragraph retrieval in the CLIP4Clip layout (docs/data/index.md, DiDeMo).

Files under ``root``: ``train_data.json`` / ``val_data.json`` / ``test_data.json`` (lists of
``{"video": id, "description": str, "times": [[s, e], ...], ...}``) and ``train_list.txt`` /
``val_list.txt`` / ``test_list.txt`` (8,392 / 1,065 / 1,004 ids; the ids include the file extension and
must match the video names). Protocol: paragraph retrieval, all descriptions of a video joined with a
space in file order into one query per video. Longer budgets by default (32 frames; 64 words in
``configs/data/didemo.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.annotations import Split, read_json, require_str
from datamodules.base import VideoTextDataModule
from datamodules.jsonl import MalformedFileError


class DiDeMo(VideoTextDataModule):
    """DiDeMo paragraph-to-video retrieval.

    Args:
        train_json: training moment descriptions.
        val_json: validation moment descriptions.
        test_json: test moment descriptions.
        train_list: training video ids (with extension).
        val_list: validation video ids.
        test_list: test video ids.
        num_frames: frames per video (32, NarVid's DiDeMo budget; CLIP4Clip uses 64).
        max_words: paragraph length budget (64).
        **kwargs: ``VideoTextDataModule`` arguments.
    """

    name = "didemo"
    title = "DiDeMo"

    def __init__(self, train_json: str = "train_data.json", val_json: str = "val_data.json",
                 test_json: str = "test_data.json", train_list: str = "train_list.txt",
                 val_list: str = "val_list.txt", test_list: str = "test_list.txt", num_frames: int = 32,
                 max_words: int = 64, **kwargs: Any) -> None:
        super().__init__(num_frames=num_frames, max_words=max_words, **kwargs)
        self.jsons = {"train": train_json, "val": val_json, "test": test_json}
        self.lists = {"train": train_list, "val": val_list, "test": test_list}

    def parse_listed_split(self, split: str, video_ids: list[str], list_file: Path) -> Split:
        source = self.root / self.jsons[split]
        data = read_json(source)
        if not isinstance(data, list):
            raise MalformedFileError(f"{source}: expected a list of {{'video', 'description', 'times'}} (DiDeMo "
                                     "format)")
        descriptions: dict[str, list[str]] = {}
        for k, entry in enumerate(data):
            if not isinstance(entry, dict) or "video" not in entry or "description" not in entry:
                raise MalformedFileError(f"{source}: entry {k} lacks 'video' or 'description'")
            vid = require_str(entry["video"], f"{source}: entry {k}", "'video'")
            description = require_str(entry["description"], f"{source}: entry {k} (video {vid!r})", "'description'",
                                      empty_ok=True)  # an empty one: caption_split names it
            descriptions.setdefault(vid, []).append(description)
        return self.caption_split(split, video_ids, descriptions, source, list_file,
                                  "paragraph (descriptions joined)", paragraph=True)
