"""VATEX in the HGR split used by Cap4Video/NarVid/TS2-Net (README "Data preparation", VATEX).

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

from datamodules.annotations import Split, read_json
from datamodules.base import VideoTextDataModule

log = logging.getLogger(__name__)

OFFICIAL_FILES = ("vatex_training_v1.0.json", "vatex_validation_v1.0.json")


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
        self._captions: tuple[dict[str, list[str]], Path] | None = None

    def _load_captions(self) -> tuple[dict[str, list[str]], Path]:
        if self._captions is not None:
            return self._captions
        layout = self.annotation_layout
        if layout == "auto":
            layout = "vatex_data" if (self.root / self.data_json).is_file() else "official"
            if layout == "official" and not any((self.root / f).is_file() for f in self.official_jsons):
                raise FileNotFoundError(f"VATEX: neither {self.root / self.data_json} nor the official "
                                        f"{self.official_jsons} exist under {self.root}")
        captions: dict[str, list[str]] = {}
        if layout == "vatex_data":
            source = self.root / self.data_json
            data = read_json(source)
            if not isinstance(data, dict):
                raise ValueError(f"{source}: expected a dict video_id -> {{'enCap': [...]}} (vatex_data.json)")
            for vid, entry in data.items():
                if not isinstance(entry, dict) or "enCap" not in entry:
                    raise ValueError(f"{source}: entry {vid!r} lacks 'enCap'")
                captions[str(vid)] = list(entry["enCap"])
        else:
            source = self.root / self.official_jsons[0]
            for name in self.official_jsons:
                path = self.root / name
                data = read_json(path)
                if not isinstance(data, list):
                    raise ValueError(f"{path}: expected a list of {{'videoID', 'enCap', 'chCap'}} (official layout)")
                for k, entry in enumerate(data):
                    if not isinstance(entry, dict) or "videoID" not in entry or "enCap" not in entry:
                        raise ValueError(f"{path}: entry {k} lacks 'videoID' or 'enCap'")
                    captions[str(entry["videoID"])] = list(entry["enCap"])
        odd = [v for v, c in captions.items() if len(c) != self.captions_per_video]
        if odd:
            log.warning("VATEX %s: %d clips do not have %d English captions (e.g. %s)", source, len(odd),
                        self.captions_per_video, odd[:3])
        self._captions = (captions, source)
        return self._captions

    def parse_listed_split(self, split: str, video_ids: list[str], list_file: Path) -> Split:
        captions, source = self._load_captions()
        result = self.caption_split(split, video_ids, captions, source, list_file,
                                    "all English captions (multi-caption)")
        result.info["annotations"] = source.name
        return result
