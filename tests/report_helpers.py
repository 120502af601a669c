"""Helpers of the comparison-report tests: reading a table of report.md, copying a run folder, reading the records
of an offline W&B run."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

METRIC_COLUMNS = {"T2V R@1": "t2v_R1", "T2V R@5": "t2v_R5", "T2V R@10": "t2v_R10", "T2V MdR": "t2v_MdR",
                  "T2V MnR": "t2v_MnR", "V2T R@1": "v2t_R1", "V2T R@5": "v2t_R5", "V2T R@10": "v2t_R10",
                  "rsum": "rsum"}


def offline_wandb(tmp_path: Path, monkeypatch: Any) -> None:
    """W&B offline, with every folder it writes (runs, artifacts, cache, settings) under ``tmp_path``."""
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_DATA_DIR", "wandb_data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def table(markdown: str, section: str) -> list[dict[str, str]]:
    """Rows of the first table under ``## section`` as dicts keyed by the header."""
    lines = markdown.split(f"## {section}", 1)[1].split("\n## ", 1)[0].splitlines()  # up to the next section
    rows = [line for line in lines if line.startswith("|")]
    split = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    header, body = split[0], split[2:]
    end = next((i for i, row in enumerate(body) if len(row) != len(header)), len(body))
    return [dict(zip(header, row, strict=True)) for row in body[:end]]


def _copy_run(runs: Path, tmp_path: Path) -> Path:
    run = tmp_path / "copy" / "version_0"
    shutil.copytree(runs / "meanP_s0" / "version_0", run)
    return run


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline run's ``run-*.wandb`` file (LevelDB log format: 7-byte W&B header,
    32 KiB blocks of chunks with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    chunks: list[bytes] = []
    pending = b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records
