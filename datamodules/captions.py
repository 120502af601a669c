"""Auxiliary caption store: JSONL files of generated captions, keyed by video id.

One JSON object per line::

    {"video_id": str, "kind": "narration" | "multi" | "supplement", "prompt": str,
     "captions": [str, ...], "model": str, "created": str, "frame_indices": [int, ...]  # narration only}

``frame_indices`` (optional, narration only) is the sampled frame index of each caption. A file may
hold several records for one video only if their ``kind`` differs. The writer (``python main.py predict
--config configs/captioners/<kind>.yaml``) appends lines atomically; if it crashed mid-line, the torn
*last* line is ignored with a warning (it is redone on resume). A malformed line anywhere else is an
error naming the file and the line number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from datamodules.jsonl import MalformedFileError, read_jsonl_lines

log = logging.getLogger(__name__)

# the one declaration of the caption kinds: the captioning package (lightning_modules/captioning) imports it
CaptionKind = Literal["narration", "multi", "supplement"]
KINDS: tuple[str, ...] = get_args(CaptionKind)


# the shipped captioner config of each kind (configs/captioners/), real data first, SynthVTR second
CAPTIONER_CONFIGS: dict[str, tuple[str, str]] = {
    "narration": ("narration_llava.yaml", "synthvtr_narration.yaml"),
    "multi": ("multi_gpt4o.yaml", "synthvtr_multi.yaml"),
    "supplement": ("supplement_a.yaml", "synthvtr_supplement_a.yaml"),
}


def generate_command(kind: str) -> str:
    """The command that writes missing records of ``kind`` (the captioner's predict run)."""
    real, synthetic = CAPTIONER_CONFIGS.get(kind, ("<kind>.yaml", "synthvtr_<kind>.yaml"))
    return (f"python main.py predict --config configs/captioners/{real} --config <the run's data config, e.g. "
            f"configs/data/msvd.yaml> (SynthVTR: configs/captioners/{synthetic}; resumes: ids already written are "
            "skipped)")


class MissingCaptionsError(LookupError):
    """Videos of a split have no record of the configured kind."""


@dataclass(frozen=True)
class CaptionRecord:
    """One video's generated captions of one kind."""

    video_id: str
    kind: str
    captions: list[str]
    prompt: str = ""
    model: str = ""
    created: str = ""
    frame_indices: list[int] | None = None
    # the annotated text a {text} prompt was filled with, its id and split (what a test's lineage counts)
    context_text: str | None = None
    context_text_id: str | None = None
    context_split: str | None = None


def _optional_str(obj: dict[str, object], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedFileError(f"{where}: {key!r} must be a string, got {type(value).__name__} (video "
                                 f"{obj['video_id']!r})")
    return value


def _parse_record(obj: object, where: str) -> CaptionRecord:
    """A record with its types checked, never coerced (a null ``model`` is an error, not the text "None")."""
    if not isinstance(obj, dict):
        raise MalformedFileError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("video_id", "kind", "captions"):
        if key not in obj:
            raise MalformedFileError(f"{where}: record lacks {key!r} (keys: {sorted(obj)})")
    if not isinstance(obj["video_id"], str) or not obj["video_id"]:
        raise MalformedFileError(f"{where}: 'video_id' must be a non-empty string, got {obj['video_id']!r:.60}")
    if not isinstance(obj["kind"], str) or obj["kind"] not in KINDS:
        raise MalformedFileError(f"{where}: unknown kind {obj['kind']!r:.60}; expected one of {list(KINDS)}")
    captions = obj["captions"]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise MalformedFileError(f"{where}: 'captions' must be a non-empty list of strings (video "
                                 f"{obj['video_id']!r})")
    if any(not c.strip() for c in captions):
        raise MalformedFileError(f"{where}: empty caption in the record of video {obj['video_id']!r}")
    for key in ("prompt", "model", "created"):
        if key in obj and not isinstance(obj[key], str):
            raise MalformedFileError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__} (video "
                                     f"{obj['video_id']!r})")
    frame_indices = obj.get("frame_indices")
    if frame_indices is not None:
        if not isinstance(frame_indices, list) or not all(type(i) is int for i in frame_indices):
            raise MalformedFileError(f"{where}: 'frame_indices' must be a list of integers (video "
                                     f"{obj['video_id']!r})")
        if len(frame_indices) != len(captions):
            raise MalformedFileError(f"{where}: video {obj['video_id']!r} has {len(captions)} captions but "
                                     f"{len(frame_indices)} frame_indices")
    return CaptionRecord(video_id=obj["video_id"], kind=obj["kind"], captions=list(captions),
                         prompt=obj.get("prompt", ""), model=obj.get("model", ""), created=obj.get("created", ""),
                         frame_indices=list(frame_indices) if frame_indices is not None else None,
                         context_text=_optional_str(obj, "context_text", where),
                         context_text_id=_optional_str(obj, "context_text_id", where),
                         context_split=_optional_str(obj, "context_split", where))


class CaptionStore(dict[str, CaptionRecord]):
    """The records of one ``kind`` in one JSONL file: ``video_id -> CaptionRecord``."""

    def __init__(self, path: Path, kind: str, records: dict[str, CaptionRecord] | None = None) -> None:
        super().__init__(records or {})
        self.path = Path(path)
        self.kind = kind

    @staticmethod
    def read_all(path: str | Path, kind: str = "<kind>") -> list[CaptionRecord]:
        """Every valid record of the file (all kinds), in file order; see the module docstring for errors.

        ``kind`` only names the captioner config in the error for a missing file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"auxiliary caption file not found: {path}. Generate it with: "
                                    f"{generate_command(kind)}")
        records: list[CaptionRecord] = []
        seen: dict[tuple[str, str], int] = {}
        for line_number, obj in read_jsonl_lines(path):
            where = f"{path}:{line_number}"
            record = _parse_record(obj, where)
            key = (record.video_id, record.kind)
            if key in seen:
                raise MalformedFileError(f"{where}: second {record.kind!r} record for video {record.video_id!r} "
                                         f"(first at line {seen[key]}); a video may have one record per kind")
            seen[key] = line_number
            records.append(record)
        return records

    @classmethod
    def load(cls, path: str | Path, kind: str) -> CaptionStore:
        """The records of ``kind`` in ``path`` (a mapping ``video_id -> CaptionRecord``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown caption kind {kind!r}; expected one of {list(KINDS)}")
        records = {r.video_id: r for r in cls.read_all(path, kind) if r.kind == kind}
        return cls(Path(path), kind, records)

    def missing(self, video_ids: Iterable[str]) -> list[str]:
        return [v for v in video_ids if v not in self]

    def require(self, video_ids: Iterable[str]) -> None:
        """Fail, naming the file, how many and the first missing ids, and the command that generates them."""
        ids = list(video_ids)
        missing = self.missing(ids)
        if missing:
            raise MissingCaptionsError(f"{self.path}: {len(missing)} of {len(ids)} videos have no {self.kind!r} "
                                       f"captions (first: {missing[:5]}). Generate them with: "
                                       f"{generate_command(self.kind)}")

    def __repr__(self) -> str:
        return f"CaptionStore({str(self.path)!r}, kind={self.kind!r}, {len(self)} videos)"
