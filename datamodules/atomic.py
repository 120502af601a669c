"""Atomic file writes: the one way the suite replaces a file it may be killed while writing.

Each writer fills a temporary file beside the target (same folder, so the same file system), flushes it to disk,
renames it over the target with ``os.replace`` and syncs the folder. A crash or a SIGKILL at any point leaves the
previous file or the new one, never half of one; a failed write removes its temporary file and re-raises.

The temporary file is created with ``open(..., "xb")`` under a name unique to the process and the call, so its mode
follows the umask like any file the user creates (``tempfile.mkstemp`` would make every result ``0600``, unreadable
to the colleagues a run folder is shared with), and two processes writing the same target never share one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["atomic_write", "save_npy_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(fh)`` fills a binary temporary file that then replaces ``path``; the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with tmp.open("xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """fsync the folder, so that the rename itself survives a power cut (where the file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """``path`` holds ``data``."""
    atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    """``path`` holds ``text`` as UTF-8."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, value: Any, *, indent: int | None = 2, ensure_ascii: bool = True,
                      default: Callable[[Any], Any] | None = None) -> None:
    """``path`` holds ``value`` as JSON (``json.dumps`` with these arguments) and a final newline, as UTF-8."""
    write_text_atomic(path, json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, default=default) + "\n")


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` of ``array`` at ``path`` (the name is kept as given: write it with its ``.npy``)."""
    atomic_write(path, lambda fh: np.save(fh, array))
