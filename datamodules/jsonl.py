"""The one JSONL reader: one JSON value per line, blank lines skipped, and the torn-last-line rule.

Append-only writers (the caption writer, ``callbacks/caption_writer.py``) write one line per record; a
process killed mid-write leaves a torn *last* line, which is ignored with a warning (the writer redoes that
record on resume). A malformed line anywhere else is corruption: an error naming the file and the line.
Files written atomically (the SynthVTR metadata, ``datamodules/synthvtr/store.py``) pass
``tolerate_torn_tail=False``: for them any malformed line is an error. A file named ``*.gz`` is read
gzip-decompressed (the results registry keeps large stores that way).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_jsonl_lines(path: str | Path, tolerate_torn_tail: bool = True) -> Iterator[tuple[int, Any]]:
    """``(1-based line number, parsed value)`` of every non-blank line of ``path``, in file order.

    Lines are split on ``\\n`` only (a JSON string may hold U+2028, which ``str.splitlines`` would split on).
    Raises ``ValueError`` ``"<path>:<line>: malformed JSON line (...)"`` for a bad line that is not the torn
    last line (or for any bad line when ``tolerate_torn_tail`` is false).
    """
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable gzip file ({exc}); restore it or regenerate it") from exc
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if tolerate_torn_tail and i == last:
                log.warning("%s:%d: ignoring a torn last line (a writer stopped mid-line; it is redone on resume): "
                            "%.60r", path, i + 1, line)
                return
            detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ValueError(f"{path}:{i + 1}: malformed JSON line ({detail}); "
                             + ("only a torn last line is tolerated" if tolerate_torn_tail else
                                "this file is written whole, so no line may be torn")) from exc
        yield i + 1, value
