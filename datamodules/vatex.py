"""VATEX in the HGR split used by Cap4Video/NarVid/TS2-Net (docs/data/index.md, VATEX).

Two annotation layouts under ``root``:

* ``vatex_data.json`` (Cap4Video/NarVid): a dict ``video_id -> {"enCap": [10 English captions], ...}``;
* the official ``vatex_training_v1.0.json`` / ``vatex_validation_v1.0.json``: lists of
  ``{"videoID", "enCap", "chCap"}`` (merged; ``chCap`` is not used).

Either way the split is given by ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (25,991 /
1,500 / 1,500 clips, from ``cshizhe/hgr_v2t``). Ids look like ``<youtube_id>_<start>_<end>``; videos
``<video_dir>/<id>.mp4``. Protocol: every English caption is a query (10 per video; 15,000 test queries).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from datamodules.annotations import Split, read_json, require_str
from datamodules.base import VideoTextDataModule
from datamodules.jsonl import MalformedFileError

log = logging.getLogger(__name__)

OFFICIAL_FILES = ("vatex_training_v1.0.json", "vatex_validation_v1.0.json")


def _en_captions(value: Any, where: str) -> list[str]:
    """``enCap``: a list of strings. A dict (its keys) or a string (its characters) is an error, not a caption list."""
    if not isinstance(value, list):
        raise MalformedFileError(f"{where}: 'enCap' must be a list of captions, got {type(value).__name__} "
                                 f"{value!r:.60}")
    for k, caption in enumerate(value):
        require_str(caption, f"{where}: enCap[{k}]", "a caption", empty_ok=True)  # empty: caption_split names it
    return list(value)


class VATEX(VideoTextDataModule):
    """VATEX retrieval (multi-caption: every English caption is a query).

    Args:
        annotation_layout: ``auto`` (``vatex_data.json`` if present, else the official files),
            ``vatex_data`` or ``official``.
        data_json: the re-keyed annotation dict.
        official_jsons: the official annotation lists (used by the ``official`` layout).
        train_list: training clip ids.
        val_list: validation clip ids.
        test_list: test clip ids.
        captions_per_video: expected English captions per clip (a warning names clips that differ).
        **kwargs: ``VideoTextDataModule`` arguments.
    """

    name = "vatex"
    title = "VATEX"

    def __init__(self, annotation_layout: Literal["auto", "vatex_data", "official"] = "auto",
                 data_json: str = "vatex_data.json", official_jsons: list[str] | None = None,
                 train_list: str = "train_list.txt", val_list: str = "val_list.txt",
                 test_list: str = "test_list.txt", captions_per_video: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.annotation_layout = annotation_layout
        self.data_json = data_json
        self.official_jsons = list(official_jsons) if official_jsons else list(OFFICIAL_FILES)
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.captions_per_video = captions_per_video
        # captions by video, the annotation file (the first official one), and the file each video's entry is in
        self._captions: tuple[dict[str, list[str]], Path, dict[str, Path]] | None = None

    def _load_captions(self) -> tuple[dict[str, list[str]], Path, dict[str, Path]]:
        if self._captions is not None:
            return self._captions
        layout = self.annotation_layout
        if layout == "auto":
            layout = "vatex_data" if (self.root / self.data_json).is_file() else "official"
            if layout == "official" and not any((self.root / f).is_file() for f in self.official_jsons):
                raise FileNotFoundError(f"VATEX: neither {self.root / self.data_json} nor the official "
                                        f"{self.official_jsons} exist under {self.root}")
        captions: dict[str, list[str]] = {}
        origin: dict[str, Path] = {}
        if layout == "vatex_data":
            source = self.root / self.data_json
            data = read_json(source)
            if not isinstance(data, dict):
                raise MalformedFileError(f"{source}: expected a dict video_id -> {{'enCap': [...]}} (vatex_data.json)")
            for vid, entry in data.items():
                if not isinstance(entry, dict) or "enCap" not in entry:
                    raise MalformedFileError(f"{source}: entry {vid!r} lacks 'enCap'")
                captions[vid] = _en_captions(entry["enCap"], f"{source}: entry {vid!r}")
        else:
            source = self.root / self.official_jsons[0]
            first_in: dict[str, str] = {}
            for name in self.official_jsons:
                path = self.root / name
                data = read_json(path)
                if not isinstance(data, list):
                    raise MalformedFileError(f"{path}: expected a list of {{'videoID', 'enCap', 'chCap'}} (official "
                                             "layout)")
                for k, entry in enumerate(data):
                    if not isinstance(entry, dict) or "videoID" not in entry or "enCap" not in entry:
                        raise MalformedFileError(f"{path}: entry {k} lacks 'videoID' or 'enCap'")
                    vid = require_str(entry["videoID"], f"{path}: entry {k}", "'videoID'")
                    if vid in first_in:  # the later entry would silently replace the earlier one's captions
                        raise MalformedFileError(f"{path}: entry {k}: video {vid!r} appears again (first in "
                                                 f"{first_in[vid]})")
                    first_in[vid] = f"{name} entry {k}"
                    captions[vid] = _en_captions(entry["enCap"], f"{path}: entry {k} (video {vid!r})")
                    origin[vid] = path
        odd = [v for v, c in captions.items() if len(c) != self.captions_per_video]
        if odd:
            log.warning("VATEX %s: %d clips do not have %d English captions (e.g. %s)", source, len(odd),
                        self.captions_per_video, odd[:3])
        self._captions = (captions, source, origin)
        return self._captions

    def parse_listed_split(self, split: str, video_ids: list[str], list_file: Path) -> Split:
        captions, source, origin = self._load_captions()
        # the official layout spans several files: a video missing from all of them is named against all of them
        official = source != self.root / self.data_json
        label = " / ".join(str(self.root / f) for f in self.official_jsons) if official else source
        result = self.caption_split(split, video_ids, captions, label, list_file,
                                    "all English captions (multi-caption)", video_sources=origin)
        result.info["annotations"] = source.name
        return result
