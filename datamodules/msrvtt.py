"""MSR-VTT in the CLIP4Clip file layout (docs/data/index.md, MSR-VTT).

Files under ``root``: ``MSRVTT_data.json`` (``sentences`` and ``videos``), ``MSRVTT_train.9k.csv`` (or
``MSRVTT_train.7k.csv``; column ``video_id``) and ``MSRVTT_JSFUSION_test.csv`` (1k-A: columns
``key,vid_key,video_id,sentence``).

Protocols:

* ``test_protocol: jsfusion`` (default): the 1,000 csv rows are the queries, one per test video.
* ``test_protocol: all_captions``: every caption in ``MSRVTT_data.json`` of the csv's videos is a query
  (multi-caption evaluation, used by SynthVTR and for MSR-VTT "full" style evaluation).
* ``val_protocol: heldout`` (default) holds out ``val_videos`` training videos, grouped by YouTube parent (``url``)
  so clips of one parent video never straddle train and val, and selects the model on them; ``test`` evaluates
  validation on the test split (what CLIP4Clip's and NarVid's released code do, to reproduce their numbers): the
  checkpoint is then chosen on the test split, and the computed leakage verdict of every number says so
  (``metrics.json`` ``leakage``; docs/reference/leakage.md).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from datamodules.annotations import Split, TextEntry, read_csv_rows, read_json, require_int, require_str
from datamodules.base import VideoTextDataModule
from datamodules.jsonl import MalformedFileError


class MSRVTT(VideoTextDataModule):
    """MSR-VTT retrieval.

    Args:
        train_csv: training video list (``MSRVTT_train.9k.csv`` or ``MSRVTT_train.7k.csv``).
        test_csv: test list (1k-A ``MSRVTT_JSFUSION_test.csv``).
        data_json: the annotation file with every caption.
        test_protocol: ``jsfusion`` (csv sentence per video) or ``all_captions``.
        val_protocol: ``heldout`` (videos held out of train; default) or ``test`` (validate on the test split: model
            selection on test data, reported as a leak).
        val_videos: number of training videos held out when ``val_protocol`` is ``heldout``.
        val_seed: seed of the held-out draw.
        **kwargs: ``VideoTextDataModule`` arguments.
    """

    name = "msrvtt"

    def __init__(self, train_csv: str = "MSRVTT_train.9k.csv", test_csv: str = "MSRVTT_JSFUSION_test.csv",
                 data_json: str = "MSRVTT_data.json",
                 test_protocol: Literal["jsfusion", "all_captions"] = "jsfusion",
                 val_protocol: Literal["test", "heldout"] = "heldout", val_videos: int = 1000, val_seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_csv = train_csv
        self.test_csv = test_csv
        self.data_json = data_json
        self.test_protocol = test_protocol
        self.val_protocol = val_protocol
        self.val_videos = val_videos
        self.val_seed = val_seed
        self._annotations: dict[str, Any] | None = None

    # ---------------------------------------------------------------- parsing
    def _load_annotations(self) -> dict[str, Any]:
        if self._annotations is None:
            path = self.root / self.data_json
            data = read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
                raise MalformedFileError(f"{path}: expected an object with a 'sentences' list (MSR-VTT format)")
            captions: dict[str, list[tuple[int, str]]] = {}
            first_of: dict[int, int] = {}  # sen_id -> the sentence that used it first
            for k, s in enumerate(data["sentences"]):
                where = f"{path}: sentences[{k}]"
                if not isinstance(s, dict) or "video_id" not in s or "caption" not in s:
                    raise MalformedFileError(f"{where} lacks 'video_id' or 'caption': {s!r:.80}")
                vid = require_str(s["video_id"], where, "'video_id'")
                caption = require_str(s["caption"], where, "'caption'", empty_ok=True)  # empty: Split.validate
                sen_id = require_int(s.get("sen_id", k), where, "'sen_id'")
                if sen_id in first_of:  # the text id is <video>#<sen_id>: two sentences would share it
                    raise MalformedFileError(f"{where}: sen_id {sen_id} is used twice (first by "
                                             f"sentences[{first_of[sen_id]}]); each sentence needs its own")
                first_of[sen_id] = k
                captions.setdefault(vid, []).append((sen_id, caption))
            videos = data.get("videos", [])
            if not isinstance(videos, list):
                raise MalformedFileError(f"{path}: 'videos' must be a list of {{'video_id', 'url', ...}}")
            parents: dict[str, str] = {}
            for k, v in enumerate(videos):
                where = f"{path}: videos[{k}]"
                if not isinstance(v, dict) or "video_id" not in v:
                    raise MalformedFileError(f"{where} lacks 'video_id': {v!r:.80}")
                vid = require_str(v["video_id"], where, "'video_id'")
                if vid in parents:
                    raise MalformedFileError(f"{where}: video {vid!r} is listed twice in 'videos'")
                parents[vid] = require_str(v.get("url", vid), where, "'url'")
            self._annotations = {"captions": captions, "parents": parents, "path": path}
        return self._annotations

    def _train_ids(self) -> list[str]:
        path = self.root / self.train_csv
        ids = [r["video_id"] for r in read_csv_rows(path, ["video_id"])]
        if not ids:
            raise MalformedFileError(f"{path}: lists no videos (a header and no rows)")
        seen: set[str] = set()
        dup = [v for v in ids if v in seen or seen.add(v)]  # type: ignore[func-returns-value]
        if dup:
            raise MalformedFileError(f"{path}: video ids listed more than once: {dup[:5]}")
        return ids

    def _heldout_ids(self, train_ids: list[str]) -> set[str]:
        """Hold out whole parent videos (``url``) until ``val_videos`` clips are held out."""
        if self.val_videos >= len(train_ids):
            raise ValueError(f"{self.root / self.train_csv}: val_protocol heldout holds out val_videos="
                             f"{self.val_videos} training videos but the list has only {len(train_ids)}, which would "
                             "leave none to train on; set data.init_args.val_videos to a small share of them (the "
                             "shipped MSR-VTT config holds out 1,000 of 9,000)")
        parents = self._load_annotations()["parents"]
        groups: dict[str, list[str]] = {}
        for vid in train_ids:
            groups.setdefault(parents.get(vid, vid), []).append(vid)
        keys = sorted(groups)
        random.Random(self.val_seed).shuffle(keys)
        held: set[str] = set()
        for key in keys:
            if len(held) >= self.val_videos:
                break
            held.update(groups[key])
        if len(held) == len(train_ids):  # whole YouTube parents are held out, so one family can take the last clips
            raise ValueError(f"{self.root / self.train_csv}: val_protocol heldout holds out whole YouTube parents "
                             f"(the 'url' of {self.data_json}) until val_videos={self.val_videos} clips are held "
                             f"out, and that takes all {len(train_ids)} training videos, leaving none to train on; "
                             "set data.init_args.val_videos lower or list more training videos")
        return held

    def _caption_split(self, name: str, video_ids: list[str], protocol: str) -> Split:
        ann = self._load_annotations()
        videos, texts = [], []
        for vid in video_ids:
            caps = ann["captions"].get(vid)
            if not caps:
                raise ValueError(f"{ann['path']}: video {vid!r} of split '{name}' ({self.train_csv} / "
                                 f"{self.test_csv}) has no caption in the annotations")
            for sen_id, caption in caps:
                texts.append(TextEntry(f"{vid}#{sen_id}", caption, len(videos)))
            videos.append(self.video_entry(vid, self.root / (self.test_csv if name == "test" else self.train_csv)))
        return Split(name, videos, texts, protocol)

    def load_split(self, split: str) -> Split:
        if split == "val" and self.val_protocol == "test":
            result = self.load_split("test")
            selection = "test split (val_protocol: test, CLIP4Clip's habit)"
            result.name, result.info = "val", {**result.info, "model_selection": selection}
            return result
        if split in ("train", "val"):
            train_ids = self._train_ids()
            held = self._heldout_ids(train_ids) if self.val_protocol == "heldout" else set()
            if split == "train":
                result = self._caption_split("train", [v for v in train_ids if v not in held], "all captions")
            else:
                result = self._caption_split("val", [v for v in train_ids if v in held], "held-out train videos")
                result.info["model_selection"] = f"{len(held)} held-out training videos"
        elif split == "test":
            path = self.root / self.test_csv
            if self.test_protocol == "jsfusion":
                rows = read_csv_rows(path, ["video_id", "sentence"])
                videos, texts, position = [], [], {}
                for r, row in enumerate(rows):
                    vid = row["video_id"]
                    if vid not in position:
                        position[vid] = len(videos)
                        videos.append(self.video_entry(vid, path))
                    texts.append(TextEntry(row.get("key") or f"{vid}#csv{r}", row["sentence"], position[vid]))
                result = Split("test", videos, texts, "1k-A (JSFusion csv)")
            else:
                ids = list(dict.fromkeys(r["video_id"] for r in read_csv_rows(path, ["video_id"])))
                if not ids:
                    raise MalformedFileError(f"{path}: lists no videos (a header and no rows)")
                result = self._caption_split("test", ids, "all captions of the test videos")
        else:
            raise ValueError(f"unknown split {split!r}")
        jsfusion = split == "test" and self.test_protocol == "jsfusion"
        result.validate(str(self.root / self.test_csv if jsfusion else self.root / self.data_json))
        return result
