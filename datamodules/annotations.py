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
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
    """JSON with an error that names the file and the position of a syntax error."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def read_csv_rows(path: Path, required: list[str]) -> list[dict[str, str]]:
    """CSV rows as dicts; fails naming the file and the missing column(s)."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {columns}")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def read_id_list(path: Path) -> list[str]:
    """A split list (``train_list.txt``): one video id per line, blank lines ignored, duplicates an error."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: split list is empty")
    seen: set[str] = set()
    dup = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dup:
        raise ValueError(f"{path}: video ids listed more than once: {dup[:5]}")
    return ids


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
        raise ValueError(f"{path}: refused to unpickle: {exc}; this file may hold only dicts, lists and strings "
                         "(an annotation pickle that references other globals is not a dataset file)") from exc
    except (EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


