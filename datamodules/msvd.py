"""MSVD in the CLIP4Clip file layout (docs/data/index.md, MSVD).

Files under ``root``: ``raw-captions.pkl`` (a dict ``video_id -> [caption, ...]``, each caption a list of
tokens joined with a space; read with a restricted unpickler that admits only builtin containers and
strings) and ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (one id per line; 1,200 / 100 /
670 videos). Videos: ``<video_dir>/<id>.avi`` (the ``YouTubeClips`` folder of the public release).

Protocol: every caption is a query (about 41 per video; ~27k test queries). t2v ranks each caption
against all test videos; v2t counts a hit when any caption of the video ranks within K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules.annotations import Split, load_restricted_pickle
from datamodules.base import VideoTextDataModule
from datamodules.jsonl import MalformedFileError


class MSVD(VideoTextDataModule):
    """MSVD retrieval (multi-caption: every caption is a query).

    Args:
        captions_pkl: the token-list captions (``raw-captions.pkl``).
        train_list: training video ids.
        val_list: validation video ids (model selection).
        test_list: test video ids.
        video_dir: the clips (``YouTubeClips`` in the public release), relative to ``root`` unless absolute.
        **kwargs: ``VideoTextDataModule`` arguments.
    """

    name = "msvd"
    title = "MSVD"

    def __init__(self, captions_pkl: str = "raw-captions.pkl", train_list: str = "train_list.txt",
                 val_list: str = "val_list.txt", test_list: str = "test_list.txt", video_dir: str = "YouTubeClips",
                 **kwargs: Any) -> None:
        super().__init__(video_dir=video_dir, **kwargs)
        self.captions_pkl = captions_pkl
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self._captions: dict[str, list[str]] | None = None

    def _load_captions(self) -> dict[str, list[str]]:
        if self._captions is None:
            path = self.root / self.captions_pkl
            raw = load_restricted_pickle(path)
            if not isinstance(raw, dict):
                raise MalformedFileError(f"{path}: expected a dict video_id -> list of captions, got "
                                         f"{type(raw).__name__}")
            captions: dict[str, list[str]] = {}
            for vid, caps in raw.items():
                if not isinstance(vid, str):  # str(5) would make an id no list names, or collide with '5'
                    raise MalformedFileError(f"{path}: video id {vid!r} is a {type(vid).__name__}, not a string")
                if not isinstance(caps, list | tuple):
                    raise MalformedFileError(f"{path}: captions of video {vid!r} are a {type(caps).__name__}, not a "
                                             "list")
                joined = []
                for k, c in enumerate(caps):
                    # each caption is a token list (CLIP4Clip's pkl) or, tolerated, already a string
                    tokens = [c] if isinstance(c, str) else c
                    if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
                        raise MalformedFileError(f"{path}: caption #{k} of video {vid!r} is {c!r:.60}, not a string "
                                                 "or a list of string tokens")
                    joined.append(" ".join(tokens))
                captions[vid] = joined
            self._captions = captions
        return self._captions

    def parse_listed_split(self, split: str, video_ids: list[str], list_file: Path) -> Split:
        return self.caption_split(split, video_ids, self._load_captions(), self.root / self.captions_pkl, list_file,
                                  "all captions (multi-caption)")
