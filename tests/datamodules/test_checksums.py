"""datamodules.checksums: the file and id-set digests every stage records and compares."""

from __future__ import annotations

import hashlib
from pathlib import Path

from datamodules import checksums
from datamodules.checksums import file_sha256, ids_sha256


def test_file_sha256_reads_in_chunks_and_equals_hashlib_on_the_whole_file(tmp_path: Path, monkeypatch) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    monkeypatch.setattr(checksums, "CHUNK", 4096)  # many reads, a short last one
    assert file_sha256(path) == file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_ids_sha256_is_the_identity_of_a_set() -> None:
    assert ids_sha256(["b", "a", "c"]) == ids_sha256(("c", "b", "a")) == hashlib.sha256(b"a\nb\nc").hexdigest()
    assert ids_sha256(["a", "b"]) != ids_sha256(["a", "b", "c"])
    assert ids_sha256([]) == hashlib.sha256(b"").hexdigest()
