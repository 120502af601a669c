"""Annotation side of a split: the typed ``Split`` (videos, texts and their map), the evaluation index the
model scores with, the stage -> split mapping, and the readers of the annotation file formats (JSON, CSV,
id lists, restricted pickles).

Every data module (``datamodules/base.py`` and its subclasses) parses its public annotation files into
these types; nothing here imports torch.
"""

from __future__ import annotations

import builtins
import collections
import csv
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from datamodules.jsonl import MalformedFileError, read_json_file

Stage = Literal["fit", "validate", "test", "predict"]
SplitName = Literal["train", "val", "test"]
EvalSplitName = Literal["val", "test"]


def eval_split(stage: str) -> EvalSplitName:
    """The split evaluated in a Lightning stage (or a trainer state's stage value, or a metric prefix).

    ``validate``, ``sanity_check`` and ``val`` evaluate the validation split; every other stage the test split.
    """
    return "val" if stage in ("val", "validate", "sanity_check") else "test"


def stage_split(stage: str) -> SplitName:
    """The split whose batches a trainer stage (``trainer.state.stage`` value) iterates: ``train`` while
    training, else ``eval_split``."""
    return "train" if stage in ("train", "fit") else eval_split(stage)


@dataclass
class VideoEntry:
    """One video of a split: its public id and where its file (or frame folder) is."""

    video_id: str
    path: Path


@dataclass
class TextEntry:
    """One text of a split: a stable id, the sentence and the index of its video in ``Split.videos``."""

    text_id: str
    text: str
    video: int


@dataclass
class Split:
    """A split as the protocol defines it: the videos, the texts, and how they map."""

    name: str
    videos: list[VideoEntry]
    texts: list[TextEntry]
    protocol: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self, source: str) -> None:
        """Empty captions and dangling video references are annotation errors: fail loudly."""
        if not self.videos:
            raise ValueError(f"{source}: split '{self.name}' has no videos")
        ids = [v.video_id for v in self.videos]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"{source}: split '{self.name}' lists videos more than once: {dup}")
        text_ids = [t.text_id for t in self.texts]
        if len(set(text_ids)) != len(text_ids):  # a text id names one sentence in every artifact (text_ids.json)
            seen: set[str] = set()
            dup = [i for i in text_ids if i in seen or seen.add(i)][:5]  # type: ignore[func-returns-value]
            raise ValueError(f"{source}: split '{self.name}' has text ids more than once: {dup}; each sentence "
                             "needs its own id (sen_id, key)")
        for t in self.texts:
            if not t.text or not t.text.strip():
                raise ValueError(f"{source}: empty caption {t.text_id!r} (video "
                                 f"{self.videos[t.video].video_id}) in split '{self.name}'; fix or remove it")
            if not 0 <= t.video < len(self.videos):
                raise ValueError(f"{source}: text {t.text_id!r} points at video index {t.video} outside the split")
        has_text = np.zeros(len(self.videos), dtype=bool)
        has_text[[t.video for t in self.texts]] = True
        if not has_text.all():
            missing = [self.videos[i].video_id for i in np.flatnonzero(~has_text)[:5]]
            raise ValueError(f"{source}: {int((~has_text).sum())} video(s) of split '{self.name}' have no "
                             f"caption, e.g. {missing}")

    def texts_of_video(self) -> list[list[int]]:
        """For each video, the indices of its texts."""
        groups: list[list[int]] = [[] for _ in self.videos]
        for i, t in enumerate(self.texts):
            groups[t.video].append(i)
        return groups


@dataclass
class EvalIndex:
    """What the model needs to score an evaluation split and write its artifacts."""

    text_ids: list[str]
    texts: list[str]
    text_to_video: list[int]
    video_ids: list[str]


# --------------------------------------------------------------------------------------------- file formats
def read_json(path: Path) -> Any:
    """JSON, strictly (``datamodules.jsonl.parse_json``: UTF-8, no duplicate keys, no lone surrogates, bounded
    nesting); every failure is a ``MalformedFileError`` naming the file (and the position of a syntax error)."""
    return read_json_file(path, "annotation file")


def _text(path: Path, what: str) -> str:
    """A text file's content as UTF-8; anything else is an error naming the file and the byte."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MalformedFileError(f"{path}: not UTF-8 (byte {data[exc.start:exc.start + 1]!r} at line {line}, byte "
                                 f"{exc.start}); save the {what} as UTF-8") from None
    return text.removeprefix("\ufeff")  # a byte-order mark (spreadsheet exports) would become part of the first id


def read_csv_rows(path: Path, required: list[str]) -> list[dict[str, str]]:
    """CSV rows as dicts; fails naming the file and the missing column(s), or the line of a row that is not well
    formed (more or fewer fields than the header, a field over the csv module's size limit, a NUL byte)."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    # strict: a stray quote or one left open is an error, not a field silently run together with the next ones
    reader = csv.reader(io.StringIO(_text(path, "csv file"), newline=""), strict=True)
    try:
        header = next(reader, None)
        columns = [c.strip() for c in header or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise MalformedFileError(f"{path}: missing column(s) {missing}; found {columns}")
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:  # a dict per row would keep only the last of them
            raise MalformedFileError(f"{path}: column(s) {twice} appear more than once in the header")
        rows = []
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(columns):
                raise MalformedFileError(f"{path}:{reader.line_num}: {len(fields)} field(s) where the header has "
                                         f"{len(columns)} ({columns}); quote fields that hold commas")
            rows.append({c: v.strip() for c, v in zip(columns, fields, strict=True)})
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL byte, an unterminated quote
        raise MalformedFileError(f"{path}:{reader.line_num}: not readable as csv ({exc})") from None
    return rows


def read_id_list(path: Path) -> list[str]:
    """A split list (``train_list.txt``): one video id per line, blank lines ignored, duplicates an error."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    ids = [line.strip() for line in _text(path, "split list").split("\n") if line.strip()]
    if not ids:
        raise MalformedFileError(f"{path}: split list is empty")
    seen: set[str] = set()
    dup = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dup:
        raise MalformedFileError(f"{path}: video ids listed more than once: {dup[:5]}")
    return ids


def require_str(value: Any, where: str, what: str, empty_ok: bool = False) -> str:
    """``value`` when it is a string (non-empty unless ``empty_ok``); else an error naming ``where``: a null, a number
    or a list is never turned into text ("None", "12345", "['a', 'b']")."""
    if not isinstance(value, str):
        raise MalformedFileError(f"{where}: {what} must be a string, got {type(value).__name__} {value!r:.60}")
    if not empty_ok and not value.strip():
        raise MalformedFileError(f"{where}: {what} is empty")
    return value


def require_int(value: Any, where: str, what: str) -> int:
    """``value`` when it is an integer (a bool, float or string is not)."""
    if type(value) is not int:
        raise MalformedFileError(f"{where}: {what} must be an integer, got {type(value).__name__} {value!r:.60}")
    return value


_PICKLE_ALLOWED = {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int")}
_PICKLE_ALLOWED |= {("collections", "OrderedDict"), ("__builtin__", "unicode"), ("__builtin__", "str")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only builtin containers and strings: an annotation pickle has no business running code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return getattr(builtins, name, None) or getattr(collections, name, str)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle an annotation file (MSVD ``raw-captions.pkl``) admitting only containers and strings."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with path.open("rb") as fh:
            return _RestrictedUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        if "forbidden global" not in str(exc):
            raise MalformedFileError(f"{path}: not a readable pickle ({exc})") from None
        raise MalformedFileError(f"{path}: refused to unpickle: {exc}; this file may hold only dicts, lists and "
                                 "strings (an annotation pickle that references other globals is not a dataset file)"
                                 ) from None
    except Exception as exc:  # any other failure of a damaged pickle: one error naming the file
        raise MalformedFileError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
