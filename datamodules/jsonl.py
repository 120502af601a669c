"""The one JSON reader and the one JSONL reader: strict decoding, the torn-last-line rule, and its repair.

Every file the suite parses as JSON goes through ``parse_json``: UTF-8 only (a UTF-16 or Latin-1 file is an error, not
a guess), an object key that appears twice is an error (``json`` would silently keep the last value), a string with
a lone UTF-16 surrogate (``"\\ud800"``, valid JSON escape syntax but no character) is an error (it cannot be written
back as UTF-8, so it would crash a writer or tokenizer later, far from the file), and nesting too deep for the
parser is an error; each names the file (and line, key path) as ``MalformedFileError``.

Append-only writers (the caption writer, ``callbacks/caption_writer.py``; CSI's round log; the importer's
``--append``) write one line per record; a process killed mid-write leaves a torn *last* line, which the reader
ignores with a warning. ``repair_torn_tail`` removes it before the next append, so the new record never lands glued
onto the fragment (also when the tear is inside a multi-byte character). A malformed line anywhere else is
corruption: an error naming the file and the line. Files written atomically (the SynthVTR metadata,
``datamodules/synthvtr/store.py``) pass ``tolerate_torn_tail=False``: for them any malformed line is an error.
A file named ``*.gz`` is read gzip-decompressed (the results registry keeps large stores that way).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# a \uD800-\uDFFF escape: only where one occurs can a parsed string hold a lone surrogate (a cheap pre-check)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class MalformedFileError(ValueError):
    """A file the suite reads (annotations, a caption store, a released caption file, a manifest, a run log) cannot be
    decoded or holds the wrong types; the message names the file, the line, record or key, and what to do."""


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: an object whose key appears twice would lose one value silently; refuse it."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _lone_surrogate_at(value: Any) -> str | None:
    """The key path (``sentences[3].caption``) of the first string holding a lone surrogate, or None."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:  # iterative: the value may be as deep as the parser allows
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "the top-level string"
        elif isinstance(item, dict):
            for key, child in item.items():
                try:
                    key.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where}.<key {key!r}>" if where else f"<key {key!r}>"
                stack.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{k}]") for k, child in enumerate(item))
    return None


def replace_lone_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` (a JSON-like value) with every lone UTF-16 surrogate in its strings and keys replaced by U+FFFD, and
    how many were replaced: what a writer does before encoding a record it did not read from a file (an API's
    answer). A surrogate pair split into two code points is joined back into its character (nothing is lost); a lone
    one is no character at all and cannot be written as UTF-8. The caller counts and reports the replacements.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value, 0
        except UnicodeEncodeError:
            fixed = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
            return fixed, fixed.count("\ufffd") - value.count("\ufffd")
    if isinstance(value, dict):
        out, total = {}, 0
        for key, item in value.items():
            (key, n_key), (item, n_item) = replace_lone_surrogates(key), replace_lone_surrogates(item)
            out[key] = item
            total += n_key + n_item
        return out, total
    if isinstance(value, list | tuple):
        items = [replace_lone_surrogates(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0


def parse_json(data: bytes, where: str, line_mode: bool = False) -> Any:
    """The JSON value of ``data`` (UTF-8), strictly: see the module docstring.

    ``where`` starts every message (``"<path>"``, or ``"<path>:<line>"`` for a JSONL line, ``line_mode`` then leaves
    the line out of a syntax error's position). Raises ``MalformedFileError``.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        position = f"byte {exc.start}" if line_mode else f"line {line}, byte {exc.start}"
        raise MalformedFileError(f"{where}: not UTF-8 (byte {data[exc.start:exc.start + 1]!r} at {position}: "
                                 f"{exc.reason}); save the file as UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        position = f"column {exc.colno}" if line_mode else f"line {exc.lineno} column {exc.colno}"
        raise MalformedFileError(f"{where}: malformed JSON at {position}: {exc.msg}") from None
    except _DuplicateKey as exc:
        raise MalformedFileError(f"{where}: key {exc.key!r} appears twice in one object; JSON keeps only the last, "
                                 "so the other value would be lost silently: remove one of them") from None
    except RecursionError:
        raise MalformedFileError(f"{where}: JSON nested deeper than the parser allows (about a thousand levels); "
                                 "no file of this suite nests more than a few, so this one is damaged or hostile"
                                 ) from None
    if _SURROGATE_ESCAPE.search(text):
        bad = _lone_surrogate_at(value)
        if bad is not None:
            raise MalformedFileError(f"{where}: {bad} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without "
                                     "its pair), which is no character and cannot be written as UTF-8; fix the "
                                     "string (U+FFFD marks an unknown character)")
    return value


def read_json_file(path: str | Path, what: str = "file") -> Any:
    """A whole JSON file through ``parse_json``; a missing file is a ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return parse_json(path.read_bytes(), str(path))


@dataclass(frozen=True)
class _Scan:
    """What reading a JSONL file found: the parsed lines, where a torn last line starts (None: not torn), and whether
    the last line is whole but lacks its newline."""

    values: list[tuple[int, Any]]
    torn_at: int | None
    needs_newline: bool
    torn_line: int = 0
    torn_fragment: bytes = b""


def _scan(data: bytes, path: Path, tolerate_torn_tail: bool) -> _Scan:
    lines = data.split(b"\n")  # on \n only: a JSON string may hold U+2028, which str.splitlines would split on
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    values: list[tuple[int, Any]] = []
    offset = 0
    for i, line in enumerate(lines):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            values.append((i + 1, parse_json(line, f"{path}:{i + 1}", line_mode=True)))
        except MalformedFileError as exc:
            if tolerate_torn_tail and i == last:
                return _Scan(values, start, False, i + 1, line)
            rule = ("only a torn last line is tolerated" if tolerate_torn_tail else
                    "this file is written whole, so no line may be torn")
            detail = str(exc).split(": ", 1)[1]
            raise MalformedFileError(f"{path}:{i + 1}: malformed JSON line ({detail}); {rule}") from None
    return _Scan(values, None, last >= 0 and last == len(lines) - 1)


def read_jsonl_lines(path: str | Path, tolerate_torn_tail: bool = True) -> Iterator[tuple[int, Any]]:
    """``(1-based line number, parsed value)`` of every non-blank line of ``path``, in file order.

    Raises ``MalformedFileError`` ``"<path>:<line>: malformed JSON line (...)"`` for a bad line that is not the torn
    last line (or for any bad line when ``tolerate_torn_tail`` is false); every line is decoded by ``parse_json``.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise MalformedFileError(f"{path}: not a readable gzip file ({exc}); restore it or regenerate it") from exc
    scan = _scan(data, path, tolerate_torn_tail)
    yield from scan.values
    if scan.torn_at is not None:
        log.warning("%s:%d: ignoring a torn last line (a writer stopped mid-line; it is redone on resume): %.60r",
                    path, scan.torn_line, scan.torn_fragment)


def repaired_bytes(data: bytes, path: str | Path) -> bytes:
    """``data`` of a JSONL file with a torn last line removed (also one torn inside a multi-byte character) and a
    whole but unterminated last line given its newline: what an append may follow. Raises ``MalformedFileError``
    (naming ``path`` and the line) when a line other than the last is malformed; nothing is then to be written."""
    scan = _scan(data, Path(path), tolerate_torn_tail=True)
    if scan.torn_at is not None:
        return data[:scan.torn_at]
    return data + b"\n" if scan.needs_newline else data


def repair_torn_tail(path: str | Path) -> int:
    """Make ``path`` safe to append to (see ``repaired_bytes``), in place; returns the number of bytes dropped.

    The whole file is checked first, so a file with a malformed middle line raises and stays unchanged. The repair
    truncates (or appends the missing newline), then fsyncs; a missing or empty file needs nothing. The caller
    reports a non-zero count in its own words (the caption writer on the user's stderr, CSI on stdout).
    """
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    fixed = repaired_bytes(data, path)
    if fixed == data:
        return 0
    with path.open("r+b") as fh:
        if len(fixed) < len(data):  # a prefix: the torn line is cut away
            fh.truncate(len(fixed))
        else:  # the newline a whole last line lacked
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return len(data) - len(fixed) if len(fixed) < len(data) else 0
