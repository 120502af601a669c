"""Hostile and careless annotation files for the dataset loaders (docs/reference/security.md), and the rule they are
judged by: every malformed file gives one clear error that names it, never a traceback from deep inside, never a wrong
dataset.

``write_annotations(dataset, root)`` writes a small valid annotation set (no videos: parsing needs none) in the public
layout; ``CASES`` are named edits that break it; ``load_every_split`` runs the data module's parser over every split;
``outcome`` classifies what happened.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st

from datamodules import MSRVTT, MSVD, VATEX, DiDeMo
from datamodules.annotations import Split
from datamodules.base import VideoTextDataModule

SPLITS = ("train", "val", "test")
# errors a loader may raise for a bad file: the suite's own (ValueError and its subclasses, FileNotFoundError), but
# not the ValueErrors Python raises from deep inside (a decoding error, a JSON syntax error naming no file)
INTERNAL_VALUE_ERRORS = (UnicodeError, json.JSONDecodeError)


def _lists(root: Path, ids: dict[str, list[str]]) -> None:
    for split, names in ids.items():
        (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in names))


def write_annotations(dataset: str, root: Path) -> Path:
    """A valid, small annotation set of ``dataset`` under ``root`` (videos folder empty); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "videos").mkdir(exist_ok=True)
    if dataset == "msrvtt":
        ids = [f"video{i}" for i in range(6)]
        sentences = [{"caption": f"a clip {i} take {k}", "video_id": v, "sen_id": 2 * i + k}
                     for i, v in enumerate(ids) for k in range(2)]
        videos = [{"video_id": v, "url": f"https://example.org/{i // 2}", "id": i} for i, v in enumerate(ids)]
        (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
        with (root / "MSRVTT_train.9k.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["video_id"], *[[v] for v in ids[:4]]])
        with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["key", "vid_key", "video_id", "sentence"],
                                      *[[f"ret{j}", f"msr{j}", v, f"a test sentence, {j}"]
                                        for j, v in enumerate(ids[4:])]])
    elif dataset == "msvd":
        ids = {"train": ["clipA_1_5", "clipB_2_6"], "val": ["clipC_3_7"], "test": ["clipD_4_8", "clipE_5_9"]}
        captions = {v: [f"a clip {v} take {k}".split() for k in range(3)] for names in ids.values() for v in names}
        with (root / "raw-captions.pkl").open("wb") as fh:
            pickle.dump(captions, fh)
        _lists(root, ids)
    elif dataset in ("vatex", "vatex_official"):
        ids = {"train": ["ytAAA_000001_000011", "ytBBB_000002_000012"], "val": ["ytCCC_000003_000013"],
               "test": ["ytDDD_000004_000014"]}
        entries = {v: {"enCap": [f"a clip {v} caption {k}" for k in range(10)], "chCap": ["一个方块"]}
                   for names in ids.values() for v in names}
        if dataset == "vatex":
            (root / "vatex_data.json").write_text(json.dumps(entries, ensure_ascii=False))
        else:
            train = [{"videoID": v, **entries[v]} for v in ids["train"]]
            rest = [{"videoID": v, **entries[v]} for v in ids["val"] + ids["test"]]
            (root / "vatex_training_v1.0.json").write_text(json.dumps(train, ensure_ascii=False))
            (root / "vatex_validation_v1.0.json").write_text(json.dumps(rest, ensure_ascii=False))
        _lists(root, ids)
    elif dataset == "didemo":
        ids = {"train": ["1000@N01_5550.mp4", "1001@N02_5551.mp4"], "val": ["1002@N03_5552.mp4"],
               "test": ["1003@N04_5553.mp4"]}
        for split, names in ids.items():
            rows = [{"video": v, "description": f"part {k} of {v}", "times": [[k, k + 1]]} for v in names
                    for k in range(2)]
            (root / f"{split}_data.json").write_text(json.dumps(rows))
        _lists(root, ids)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return root


def data_module(dataset: str, root: Path) -> VideoTextDataModule:
    common: dict[str, Any] = {"root": str(root), "video_dir": "videos", "manifest": None, "num_workers": 0}
    if dataset == "msrvtt":
        return MSRVTT(**common, val_videos=2)  # size: 2 of the 4 training videos (one YouTube parent) select
    if dataset == "msvd":
        return MSVD(**common)
    if dataset == "vatex":
        return VATEX(**common, annotation_layout="vatex_data")
    if dataset == "vatex_official":
        return VATEX(**common, annotation_layout="official")
    return DiDeMo(**common)


def load_every_split(dataset: str, root: Path) -> dict[str, Split]:
    """What training and testing would parse: every split, through the data module's own parser."""
    dm = data_module(dataset, root)
    return {split: dm.load_split(split) for split in SPLITS}


def is_clear_error(exc: BaseException, file_name: str) -> bool:
    """One of the suite's errors, naming ``file_name``."""
    return (isinstance(exc, ValueError | FileNotFoundError) and not isinstance(exc, INTERNAL_VALUE_ERRORS)
            and file_name in str(exc))


def outcome(dataset: str, root: Path, file_name: str) -> str:
    """``clear`` (an error naming the file), ``unnamed`` (an error that does not) or ``accepted`` (no error)."""
    try:
        load_every_split(dataset, root)
    except Exception as exc:  # what a user would see: classified, not hidden
        return "clear" if is_clear_error(exc, file_name) else f"unnamed: {type(exc).__name__}: {str(exc)[:100]}"
    return "accepted"


# --------------------------------------------------------------------------------------------- edits
def _edit_json(name: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / name
        data = json.loads(path.read_text())
        result = change(data)
        path.write_text(json.dumps(data if result is None else result, ensure_ascii=False))

    return edit


def _bytes(name: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / name
        path.write_bytes(change(path.read_bytes()))

    return edit


def _set(path: list[Any], value: Any) -> Callable[[Any], None]:
    def change(data: Any) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return change


def _edit_pickle(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "raw-captions.pkl"
        with path.open("rb") as fh:
            data = pickle.load(fh)
        change(data)
        with path.open("wb") as fh:
            pickle.dump(data, fh)

    return edit


def _csv_rows(name: str, rows: list[list[str]]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        with (root / name).open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)

    return edit


def _rename_everywhere(old: str, new: str, *names: str) -> Callable[[Path], None]:
    """Replace a video id in every named file (so the split list and the annotations agree on the bad id)."""
    def edit(root: Path) -> None:
        for name in names:
            path = root / name
            if name.endswith(".pkl"):
                with path.open("rb") as fh:
                    data = pickle.load(fh)
                data[new] = data.pop(old)
                with path.open("wb") as fh:
                    pickle.dump(data, fh)
            else:
                path.write_text(path.read_text().replace(old, new))

    return edit


def _symlink_escape(video_id: str, name: str) -> Callable[[Path], None]:
    """The video file is a symlink to a file outside the video folder."""
    def edit(root: Path) -> None:
        outside = root.parent / f"{root.name}-secret.txt"
        outside.write_text("not a video")
        target = root / "videos" / name
        target.unlink(missing_ok=True)
        os.symlink(outside, target)

    return edit


DEEP = b"[" * 100_000 + b"]" * 100_000
NOT_UTF8 = "caf\u00e9".encode("latin-1")  # a Latin-1 export of a caption
HUGE = "w" * 200_000  # over csv.field_size_limit() (131,072)


def _first_caption_bytes(data: bytes) -> bytes:
    return data.replace(b"take 0", NOT_UTF8, 1)


@dataclass(frozen=True)
class Case:
    """A malformed annotation set: ``edit`` breaks the valid one; the error must name ``file``."""

    name: str
    dataset: str
    file: str
    edit: Callable[[Path], None]


MSRVTT_JSON = "MSRVTT_data.json"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"

CASES: list[Case] = [
    # ------------------------------------------------------------------ MSR-VTT
    Case("msrvtt json not utf-8", "msrvtt", MSRVTT_JSON, _bytes(MSRVTT_JSON, _first_caption_bytes)),
    Case("msrvtt json utf-16", "msrvtt", MSRVTT_JSON,
         _bytes(MSRVTT_JSON, lambda b: b.decode().encode("utf-16"))),
    Case("msrvtt json truncated", "msrvtt", MSRVTT_JSON, _bytes(MSRVTT_JSON, lambda b: b[: len(b) // 2])),
    Case("msrvtt json empty", "msrvtt", MSRVTT_JSON, _bytes(MSRVTT_JSON, lambda b: b"")),
    Case("msrvtt json deeply nested", "msrvtt", MSRVTT_JSON, _bytes(MSRVTT_JSON, lambda b: DEEP)),
    Case("msrvtt json nested sentences", "msrvtt", MSRVTT_JSON,
         _bytes(MSRVTT_JSON, lambda b: b'{"sentences": ' + DEEP + b"}")),
    Case("msrvtt json a list", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, lambda d: [d])),
    Case("msrvtt json a number", "msrvtt", MSRVTT_JSON, _bytes(MSRVTT_JSON, lambda b: b"12")),
    Case("msrvtt sentences an object", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, lambda d: {
        "videos": d["videos"], "sentences": {"0": d["sentences"][0]}})),
    Case("msrvtt sentence a string", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, _set(["sentences", 0], "x"))),
    Case("msrvtt caption null", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "caption"], None))),
    Case("msrvtt caption a number", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "caption"], 12345))),
    Case("msrvtt caption a list", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "caption"], ["a", "b"]))),
    Case("msrvtt caption an object", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "caption"], {"text": "a"}))),
    Case("msrvtt caption missing", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, lambda d: d["sentences"][0].pop("caption") and None)),
    Case("msrvtt video_id missing", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, lambda d: d["sentences"][0].pop("video_id") and None)),
    Case("msrvtt video_id a number", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "video_id"], 0))),
    Case("msrvtt sen_id a word", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, _set(["sentences", 0, "sen_id"], "x"))),
    Case("msrvtt sen_id a fraction", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 0, "sen_id"], 1.5))),
    Case("msrvtt duplicate sen_id", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["sentences", 1, "sen_id"], 0))),
    Case("msrvtt duplicate key in a sentence", "msrvtt", MSRVTT_JSON, _bytes(
        MSRVTT_JSON, lambda b: b.replace(b'"caption": "a clip 0 take 0"',
                                         b'"caption": "a clip 0 take 0", "caption": "another"', 1))),
    Case("msrvtt lone surrogate in a caption", "msrvtt", MSRVTT_JSON,
         _bytes(MSRVTT_JSON, lambda b: b.replace(b"take 0", b"take \\ud800", 1))),
    Case("msrvtt videos an object", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, _set(["videos"], {"a": 1}))),
    Case("msrvtt video entry lacks video_id", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, _set(["videos", 0], {"url": "u"}))),
    Case("msrvtt video listed twice", "msrvtt", MSRVTT_JSON,
         _edit_json(MSRVTT_JSON, lambda d: d["videos"].append(dict(d["videos"][0])))),
    Case("msrvtt url a number", "msrvtt", MSRVTT_JSON, _edit_json(MSRVTT_JSON, _set(["videos", 0, "url"], 7))),
    Case("msrvtt video id escapes", "msrvtt", TRAIN_CSV,
         _rename_everywhere("video1", "../../../../etc/passwd", MSRVTT_JSON, TRAIN_CSV)),
    Case("msrvtt video id absolute", "msrvtt", TEST_CSV,
         _rename_everywhere("video5", "/etc/passwd", MSRVTT_JSON, TEST_CSV)),
    Case("msrvtt video file a symlink out", "msrvtt", TRAIN_CSV, _symlink_escape("video0", "video0.mp4")),
    Case("msrvtt train csv not utf-8", "msrvtt", TRAIN_CSV, _bytes(TRAIN_CSV, lambda b: b + b"vid\xe9o9\n")),
    Case("msrvtt train csv field over the limit", "msrvtt", TRAIN_CSV,
         _bytes(TRAIN_CSV, lambda b: b + HUGE.encode() + b"\n")),
    Case("msrvtt train csv NUL byte", "msrvtt", TRAIN_CSV, _bytes(TRAIN_CSV, lambda b: b + b"vid\x00eo\n")),
    Case("msrvtt train csv duplicate id", "msrvtt", TRAIN_CSV, _bytes(TRAIN_CSV, lambda b: b + b"video0\n")),
    Case("msrvtt train csv missing column", "msrvtt", TRAIN_CSV, _csv_rows(TRAIN_CSV, [["vid"], ["video0"]])),
    Case("msrvtt train csv header only", "msrvtt", TRAIN_CSV, _csv_rows(TRAIN_CSV, [["video_id"]])),
    Case("msrvtt test csv not utf-8", "msrvtt", TEST_CSV,
         _bytes(TEST_CSV, lambda b: b.replace(b"a test", NOT_UTF8, 1))),
    Case("msrvtt test csv sentence over the limit", "msrvtt", TEST_CSV,
         _bytes(TEST_CSV, lambda b: b.replace(b"a test sentence", HUGE.encode(), 1))),
    Case("msrvtt test csv unterminated quote", "msrvtt", TEST_CSV,
         _bytes(TEST_CSV, lambda b: b + b'ret9,m,video4,"open')),
    Case("msrvtt test csv duplicate key", "msrvtt", TEST_CSV, _bytes(TEST_CSV, lambda b: b.replace(b"ret1", b"ret0"))),
    Case("msrvtt test csv extra field", "msrvtt", TEST_CSV, _bytes(TEST_CSV, lambda b: b + b"ret7,m,video4,s,extra\n")),
    Case("msrvtt test csv short row", "msrvtt", TEST_CSV, _bytes(TEST_CSV, lambda b: b + b"ret7,m\n")),
    Case("msrvtt test csv duplicate column", "msrvtt", TEST_CSV, _csv_rows(
        TEST_CSV, [["key", "video_id", "video_id", "sentence"], ["r0", "video4", "video5", "s"]])),
    # ------------------------------------------------------------------ MSVD
    Case("msvd pickle a list", "msvd", "raw-captions.pkl", _bytes("raw-captions.pkl", lambda b: pickle.dumps([1]))),
    Case("msvd pickle truncated", "msvd", "raw-captions.pkl", _bytes("raw-captions.pkl", lambda b: b[: len(b) // 2])),
    Case("msvd pickle garbage", "msvd", "raw-captions.pkl", _bytes("raw-captions.pkl", lambda b: b"\x80\x05garbage")),
    Case("msvd video id a number", "msvd", "raw-captions.pkl", _edit_pickle(lambda d: d.update({5: [["a", "b"]]}))),
    Case("msvd token a number", "msvd", "raw-captions.pkl",
         _edit_pickle(lambda d: d.update({"clipA_1_5": [["a", 5, "c"]]}))),
    Case("msvd caption a number", "msvd", "raw-captions.pkl", _edit_pickle(lambda d: d.update({"clipA_1_5": [5]}))),
    Case("msvd caption bytes", "msvd", "raw-captions.pkl", _edit_pickle(lambda d: d.update({"clipA_1_5": [b"a b"]}))),
    Case("msvd captions a string", "msvd", "raw-captions.pkl", _edit_pickle(lambda d: d.update({"clipA_1_5": "abc"}))),
    Case("msvd list not utf-8", "msvd", "test_list.txt", _bytes("test_list.txt", lambda b: b + b"clip\xe9\n")),
    Case("msvd list id escapes", "msvd", "test_list.txt",
         _rename_everywhere("clipE_5_9", "../../outside", "test_list.txt", "raw-captions.pkl")),
    Case("msvd list id absolute", "msvd", "train_list.txt",
         _rename_everywhere("clipA_1_5", "/etc/passwd", "train_list.txt", "raw-captions.pkl")),
    Case("msvd video file a symlink out", "msvd", "train_list.txt", _symlink_escape("clipA_1_5", "clipA_1_5.avi")),
    # ------------------------------------------------------------------ VATEX
    Case("vatex enCap an object", "vatex", "vatex_data.json",
         _edit_json("vatex_data.json", _set(["ytAAA_000001_000011", "enCap"], {"a caption": 1, "another": 2}))),
    Case("vatex enCap a string", "vatex", "vatex_data.json",
         _edit_json("vatex_data.json", _set(["ytAAA_000001_000011", "enCap"], "one caption"))),
    Case("vatex enCap null", "vatex", "vatex_data.json",
         _edit_json("vatex_data.json", _set(["ytAAA_000001_000011", "enCap"], None))),
    Case("vatex enCap a number", "vatex", "vatex_data.json",
         _edit_json("vatex_data.json", _set(["ytAAA_000001_000011", "enCap"], 5))),
    Case("vatex caption a number", "vatex", "vatex_data.json",
         _edit_json("vatex_data.json", _set(["ytAAA_000001_000011", "enCap", 0], 5))),
    Case("vatex json not utf-8", "vatex", "vatex_data.json",
         _bytes("vatex_data.json", lambda b: b.replace(b"caption 0", NOT_UTF8, 1))),
    Case("vatex duplicate video key", "vatex", "vatex_data.json", _bytes(
        "vatex_data.json", lambda b: b[:-1] + b', "ytAAA_000001_000011": {"enCap": ["x"]}}')),
    Case("vatex deeply nested", "vatex", "vatex_data.json", _bytes("vatex_data.json", lambda b: DEEP)),
    Case("vatex list id escapes", "vatex", "val_list.txt",
         _rename_everywhere("ytCCC_000003_000013", "../../../x", "val_list.txt", "vatex_data.json")),
    Case("vatex official videoID a number", "vatex_official", "vatex_training_v1.0.json",
         _edit_json("vatex_training_v1.0.json", _set([0, "videoID"], 7))),
    Case("vatex official video twice", "vatex_official", "vatex_validation_v1.0.json",
         _edit_json("vatex_validation_v1.0.json", lambda d: d.append({**d[0], "enCap": ["other"]}))),
    Case("vatex official enCap an object", "vatex_official", "vatex_training_v1.0.json",
         _edit_json("vatex_training_v1.0.json", _set([0, "enCap"], {"k": "v"}))),
    # ------------------------------------------------------------------ DiDeMo
    Case("didemo description null", "didemo", "train_data.json",
         _edit_json("train_data.json", _set([0, "description"], None))),
    Case("didemo description a list", "didemo", "train_data.json",
         _edit_json("train_data.json", _set([0, "description"], ["a", "b"]))),
    Case("didemo video a number", "didemo", "test_data.json", _edit_json("test_data.json", _set([0, "video"], 1003))),
    Case("didemo json not utf-8", "didemo", "val_data.json",
         _bytes("val_data.json", lambda b: b.replace(b"part 0", NOT_UTF8, 1))),
    Case("didemo duplicate key", "didemo", "train_data.json", _bytes(
        "train_data.json",
        lambda b: b.replace(b'"description": "part 0', b'"description": "x", "description": "y', 1))),
    Case("didemo deeply nested", "didemo", "test_data.json", _bytes("test_data.json", lambda b: DEEP)),
    Case("didemo list not utf-8", "didemo", "train_list.txt", _bytes("train_list.txt", lambda b: b + b"\xff\xfe\n")),
    Case("didemo video id escapes", "didemo", "test_list.txt",
         _rename_everywhere("1003@N04_5553.mp4", "../../../../etc/passwd.mp4", "test_list.txt", "test_data.json")),
]


def run_case(case: Case, base: Path) -> str:
    """The case's outcome on a fresh valid set under ``base``."""
    root = write_annotations(case.dataset, base / case.name.replace(" ", "_"))
    case.edit(root)
    return outcome(case.dataset, root, case.file)


# --------------------------------------------------------------------------------------------- generated (hypothesis)
# Building blocks of the property-based suites (tests/conftest.py sets their bounded, derandomized budget): a valid
# file is broken by one drawn mutation, structural (a JSON node replaced by a value of any type, a key dropped or
# doubled, a value nested past the parser's depth) or byte-level (cut anywhere, also inside a multi-byte character;
# bytes inserted or overwritten; an invalid UTF-8 sequence).

# text a user's file may hold: multi-byte characters, quotes, commas, slashes, control characters, line separators
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from('é漢🎬",\n\\/.\u2028\x00'),
               max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | TEXT
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xe6\xbc", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"])


def json_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path in a JSON value (the root is ``()``)."""
    paths = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(json_paths(child, (*path, key)))
    elif isinstance(value, list):
        for k, child in enumerate(value):
            paths.extend(json_paths(child, (*path, k)))
    return paths


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _dumps_doubling(value: Any, target: tuple[Any, ...], extra: Any, path: tuple[Any, ...] = ()) -> str:
    """JSON text of ``value`` in which the object at ``target`` repeats its first key (with ``extra`` as the value)."""
    if isinstance(value, dict):
        items = [f"{json.dumps(k)}: {_dumps_doubling(v, target, extra, (*path, k))}" for k, v in value.items()]
        if path == target and value:
            items.append(f"{json.dumps(next(iter(value)))}: {json.dumps(extra)}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_dumps_doubling(v, target, extra, (*path, k)) for k, v in enumerate(value)) + "]"
    return json.dumps(value, ensure_ascii=False)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one byte-level mutation."""
    how = draw(st.sampled_from(["cut", "insert", "overwrite", "bad utf-8", "drop line", "repeat line", "swap lines"]))
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    if how == "overwrite":
        return data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at + 3:]
    if how == "bad utf-8":
        return data[:at] + draw(BAD_UTF8) + data[at:]
    lines = data.split(b"\n")
    k = draw(st.integers(0, len(lines) - 1))
    if how == "drop line":
        return b"\n".join(lines[:k] + lines[k + 1:])
    if how == "repeat line":
        return b"\n".join([*lines[:k + 1], lines[k], *lines[k + 1:]])
    j = draw(st.integers(0, len(lines) - 1))
    lines[k], lines[j] = lines[j], lines[k]
    return b"\n".join(lines)


@st.composite
def mutated_json(draw: st.DrawFn, data: bytes) -> bytes:
    """A JSON file's ``data`` with one structural or byte-level mutation."""
    value = json.loads(data)
    how = draw(st.sampled_from(["replace", "replace", "replace", "drop key", "double key", "deep", "bytes"]))
    paths = json_paths(value)
    if how == "replace":
        path = draw(st.sampled_from(paths))
        return json.dumps(_replaced(value, path, draw(JSON_VALUES)), ensure_ascii=draw(st.booleans())).encode()
    objects = [p for p in paths if isinstance(_get(value, p), dict) and _get(value, p)]
    if how == "drop key" and objects:
        path = draw(st.sampled_from(objects))
        node = dict(_get(value, path))
        node.pop(draw(st.sampled_from(sorted(node))))
        return json.dumps(_replaced(value, path, node), ensure_ascii=False).encode()
    if how == "double key" and objects:
        return _dumps_doubling(value, draw(st.sampled_from(objects)), draw(JSON_VALUES)).encode()
    if how == "deep":
        path = draw(st.sampled_from(paths))
        depth = draw(st.sampled_from([3, 50, 2000]))
        text = json.dumps(_replaced(value, path, "__deep__"))
        return text.replace('"__deep__"', "[" * depth + "1" + "]" * depth, 1).encode()
    return draw(mutated_bytes(data))


PICKLE_VALUES = st.recursive(SCALARS | st.binary(max_size=4), lambda inner: st.lists(inner, max_size=3) |
                             st.tuples(inner) | st.dictionaries(TEXT | st.integers(0, 9), inner, max_size=3),
                             max_leaves=6)


@st.composite
def mutated_pickle(draw: st.DrawFn, data: bytes) -> bytes:
    """MSVD's ``raw-captions.pkl`` with a node replaced by any container/scalar, or its bytes damaged."""
    if draw(st.booleans()):
        return draw(mutated_bytes(data))
    value = pickle.loads(data)
    path = draw(st.sampled_from(json_paths(value)))
    return pickle.dumps(_replaced(value, path, draw(PICKLE_VALUES)))


@st.composite
def mutated_lines(draw: st.DrawFn, data: bytes) -> bytes:
    """A csv or id list with a drawn line inserted (ids that escape, quotes, huge fields, text) or bytes damaged."""
    if draw(st.booleans()):
        return draw(mutated_bytes(data))
    line = draw(st.sampled_from(["../../etc/passwd", "/etc/passwd", "a,b,c,d,e", '"open', "x" * 140_000, "\x00",
                                 "video0", "clipA_1_5"]) | TEXT)
    lines = data.split(b"\n")
    k = draw(st.integers(1, len(lines)))
    return b"\n".join([*lines[:k], line.encode("utf-8", "surrogatepass"), *lines[k:]])


def mutate_file(draw: st.DrawFn, path: Path) -> bytes:
    """One drawn mutation of the file at ``path``, by its format."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return draw(mutated_json(data))
    if path.suffix == ".pkl":
        return draw(mutated_pickle(data))
    return draw(mutated_lines(data))


def annotation_files(dataset: str, root: Path) -> list[str]:
    """The files a dataset's parser reads (what a mutation may hit)."""
    return sorted(p.name for p in root.iterdir() if p.is_file())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path and content: "unchanged" is this mapping being equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def file_strings(root: Path) -> set[str]:
    """Every string a loader could take as a text as it is written in the files of ``root``: JSON strings, csv
    fields, pickled strings and token lists joined with a space. An accepted text outside this set was made up
    (``None`` -> "None"), i.e. coerced."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list | tuple):
            if value and all(isinstance(v, str) for v in value):
                found.add(" ".join(value))
            for item in value:
                walk(item)

    for path in root.iterdir():
        if not path.is_file():
            continue
        try:
            if path.suffix == ".json":
                walk(json.loads(path.read_bytes()))
            elif path.suffix == ".pkl":
                walk(pickle.loads(path.read_bytes()))
            else:
                for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")):
                    found.update(field.strip() for field in row)
        except Exception:  # a file the loader refused is not a source of accepted texts
            continue
    return found


@st.composite
def mutated_jsonl(draw: st.DrawFn, data: bytes) -> bytes:
    """A JSONL file's ``data`` with one line mutated structurally (``mutated_json``) or the file damaged byte-wise
    (a cut anywhere is a torn last line, also inside a multi-byte character)."""
    lines = data.split(b"\n")
    filled = [k for k, line in enumerate(lines) if line.strip()]
    if not filled or draw(st.booleans()):
        return draw(mutated_bytes(data))
    k = draw(st.sampled_from(filled))
    lines[k] = draw(mutated_json(lines[k]))
    return b"\n".join(lines)


def caption_record(video_id: str, kind: str = "multi", text: str = "a caption") -> dict[str, Any]:
    """A valid caption store record (datamodules/captions.py)."""
    return {"video_id": video_id, "kind": kind, "prompt": "describe", "captions": [text, f"{text} 2"],
            "model": "sim", "created": "2026-01-01T00:00:00"}


def caption_store_bytes() -> bytes:
    """A small valid store: three kinds, multi-byte text (so a cut can fall inside a character)."""
    records = [caption_record("video0", "multi", "un café 漢字 🎬"), caption_record("video1", "multi"),
               {**caption_record("video0", "narration", "frame é"), "frame_indices": [0, 3]},
               caption_record("video2", "supplement", "a long supplement, with a comma")]
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
