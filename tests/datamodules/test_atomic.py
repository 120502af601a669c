"""``datamodules.atomic``: every writer replaces a whole file or leaves the old one, leaves no temporary file behind,
and creates files as readable as ``open()`` would (the umask's mode, not ``mkstemp``'s private 0600)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from datamodules.atomic import atomic_write, save_npy_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_each_writer_replaces_the_whole_file_and_creates_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "metrics.json"
    write_text_atomic(target, "{}")
    write_json_atomic(target, {"a": 1, "é": [1, 2]})
    assert target.read_text() == '{\n  "a": 1,\n  "\\u00e9": [\n    1,\n    2\n  ]\n}\n'
    write_json_atomic(target, {"é": Path("x")}, indent=None, ensure_ascii=False, default=str)
    assert target.read_bytes() == '{"é": "x"}\n'.encode()
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    save_npy_atomic(target.with_name("sim.npy"), np.eye(2, dtype=np.float32))
    assert np.load(target.with_name("sim.npy")).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json", "sim.npy"]


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "store.jsonl"
    write_text_atomic(target, "old\n")

    def half_then_fail(fh: IO[bytes]) -> None:
        fh.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    with pytest.raises(TypeError):  # not serialisable: fails before anything is written
        write_json_atomic(target, {"a": object()})
    with pytest.raises(KeyboardInterrupt):  # an interrupt too
        atomic_write(target, lambda fh: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["store.jsonl"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_open_would_give_them(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        for name, write in [("t.json", lambda p: write_json_atomic(p, {})), ("a.npy", lambda p: save_npy_atomic(
                p, np.zeros(2))), ("b.bin", lambda p: write_bytes_atomic(p, b"x"))]:
            write(tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) \
                == 0o666 & ~umask, name
    finally:
        os.umask(old)


def _write_many(target: str, tag: int) -> None:
    for i in range(50):
        write_text_atomic(Path(target), f"{tag}:{i}:" + "x" * 20_000 + "\n")


def test_processes_writing_one_file_never_mix_or_share_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(target), tag)) for tag in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    tag, i, body = target.read_text().split(":")
    assert int(tag) in range(3) and int(i) in range(50) and body == "x" * 20_000 + "\n"  # one writer's whole text
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]

