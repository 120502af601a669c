"""The two digests the suite records everywhere: a file's bytes, and a set of ids.

One definition, so a digest written by one stage (a SynthVTR manifest, a caption store in the leaderboard, a
registered run, a preference store's checkpoint, a lineage node) is compared by another with the same arithmetic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["file_sha256", "ids_sha256"]

CHUNK = 1 << 22  # 4 MiB reads: a checkpoint or a video is never held in memory whole


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def ids_sha256(ids: Iterable[str]) -> str:
    """sha256 (hex) of the sorted, newline-joined ids: the identity of a set (any order gives the same digest)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()
