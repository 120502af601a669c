"""``CaptionWriter``: crash-safe, resumable JSONL caption store writer for ``predict`` runs.

Guarantees (a run killed with SIGKILL and started again ends with every video captioned exactly once):

* each record is one line written with a single ``os.write`` on an ``O_APPEND`` descriptor and the file
  is fsynced after every predict batch, so a crash loses at most the batch in flight;
* a torn last line (not valid JSON, also when cut inside a multi-byte character) is detected on start and
  truncated away (``datamodules.jsonl.repair_torn_tail``, after the whole store was checked: a store damaged before
  its last line is an error naming the file and line, and is left unchanged);
* a lone UTF-16 surrogate in a caption (an API can return one) is replaced by U+FFFD, counted in the record's
  ``replaced_surrogates`` and warned about (``encode_record``), instead of failing that video on every resume;
* ids already in the store (for this ``kind``) are removed from the predict dataset *before* decoding,
  so a resumed run does no repeated work, and a record is never written twice.

Multi-rank: rank ``r`` appends to ``<output>.rank<r>``; when every rank has finished (each leaves a
``.done`` marker with the run's token, so no collective is needed at teardown) rank 0 merges the rank
files into ``<output>``: records deduplicated by video id (lowest rank wins; the sampler may give a
video to two ranks), sorted by video id, ids already in ``<output>`` skipped, then the rank files are
deleted. A crash during the merge is repaired by the next run, which counts ids in both the store and
leftover rank files as done and merges again. A single process appends to ``<output>`` directly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from datamodules.jsonl import MalformedFileError, read_jsonl_lines, repair_torn_tail, replace_lone_surrogates


class _CurrentStderr(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a record is emitted (as ``logging.lastResort`` does), so a redirected
    or captured stderr receives the messages."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


# The writer's progress (videos already captioned, records written) is for the person running ``predict``: shown on
# stderr at INFO, as Lightning shows its own logger's messages; reconfigure the ``callbacks.caption_writer`` logger
# to route it elsewhere.
log = logging.getLogger(__name__)
if not log.handlers:
    log.addHandler(_CurrentStderr())
    log.setLevel(logging.INFO)
    log.propagate = False


def repair_jsonl(path: Path) -> int:
    """Truncate a torn last line away (``datamodules.jsonl.repair_torn_tail``, the one repair every appender uses);
    returns the number of bytes dropped. Raises, leaving the file unchanged, on a malformed middle line."""
    return repair_torn_tail(path)


def read_jsonl(path: Path, tolerant_tail: bool = True) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (none if it does not exist); the torn-last-line rule of ``datamodules/jsonl.py``."""
    if path.is_file():
        yield from (record for _, record in read_jsonl_lines(path, tolerate_torn_tail=tolerant_tail))


def _require_text_ids(videos: Sequence[Any]) -> None:
    """Refuse, before any captioning, videos whose id is no text: a file name with bytes that are not UTF-8 (Python
    keeps them as lone surrogates). Replacing them would store the video under another id, so every resume would
    caption it again; the one fix is renaming the file."""
    bad = [v for v in videos if replace_lone_surrogates(v.video_id)[1]]
    if bad:
        shown = [os.fsencode(v.path) if getattr(v, "path", None) is not None else v.video_id for v in bad[:5]]
        raise ValueError(f"caption writer: {len(bad)} video(s) have file names that are not UTF-8 text, so their ids "
                         f"cannot be stored (first: {shown}); rename them (e.g. with convmv) and run again, or fix "
                         "the annotation file that names them")


def encode_record(rec: dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8) of a record.

    A lone surrogate (an API can return one, e.g. half of an emoji cut at a token boundary) would make the UTF-8
    encoding fail, so the writer would crash on that video on every resume. It is replaced by U+FFFD, the record
    says how many were (``replaced_surrogates``) and a warning names the video: visible, never silently dropped.
    """
    if replace_lone_surrogates(rec.get("video_id"))[1]:  # an id is a key: never rewritten (see _require_text_ids)
        raise ValueError(f"caption writer: video id {rec.get('video_id')!r} is not UTF-8 text; rename its file")
    fixed, replaced = replace_lone_surrogates(rec)
    if replaced:
        fixed["replaced_surrogates"] = replaced
        log.warning(f"caption writer: warning: the record of video {rec.get('video_id')!r} held {replaced} lone "
                    "UTF-16 surrogate(s) (no character; not writable as UTF-8): replaced with U+FFFD and counted in "
                    "its 'replaced_surrogates'")
    return (json.dumps(fixed, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def append_records(fd: int, records: Sequence[dict[str, Any]]) -> None:
    """One ``os.write`` per record (one line each, ``encode_record``) on an ``O_APPEND`` descriptor."""
    for rec in records:
        view = memoryview(encode_record(rec))
        while view:
            n = os.write(fd, view)
            view = view[n:]


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a store or rank file (none if it is absent), each checked for what resuming and merging read:
    a JSON object with a non-empty string ``video_id`` and a string ``kind`` (and ``prompt``, when present). Any other
    record is an error naming the file and line. The captions themselves are the loader's to judge
    (``datamodules.captions``, at training time, naming the line): refusing them here would stop every resume on a
    record this writer wrote itself."""
    if not path.is_file():
        return []
    records = []
    for line, rec in read_jsonl_lines(path):
        ok = isinstance(rec, dict) and isinstance(rec.get("video_id"), str) and rec["video_id"] \
            and isinstance(rec.get("kind"), str) and isinstance(rec.get("prompt", ""), str)
        if not ok:
            raise MalformedFileError(f"{path}:{line}: not a caption record (a JSON object with a non-empty string "
                                     f"'video_id', a string 'kind' and 'prompt'): {rec!r:.80}")
        records.append(rec)
    return records


def rank_files(output: Path) -> list[Path]:
    """Leftover per-rank files of ``output`` (this run's or an interrupted earlier run's), by rank."""
    found = [p for p in output.parent.glob(output.name + ".rank*") if p.name[len(output.name) + 5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(output.name) + 5:]))


def merge_rank_files(output: Path, kind: str | None = None) -> int:
    """Merge ``<output>.rank*`` into ``output`` deterministically; returns the number of records added."""
    parts = rank_files(output)
    if not parts:
        return 0
    repair_jsonl(output)
    done = {r["video_id"] for r in _records(output) if kind is None or r["kind"] == kind}
    merged: dict[str, dict[str, Any]] = {}
    for part in parts:
        for rec in _records(part):  # every record checked (a clear error naming the file and line)
            if (kind is None or rec.get("kind") == kind) and rec["video_id"] not in done:
                merged.setdefault(rec["video_id"], rec)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        append_records(fd, [merged[k] for k in sorted(merged)])
        os.fsync(fd)
    finally:
        os.close(fd)
    for part in parts:
        part.unlink(missing_ok=True)
    return len(merged)


class CaptionWriter(BasePredictionWriter):
    """Appends the captioner's records to a JSONL caption store (see the module docstring).

    Args:
        output: the store, relative to the data module's ``root`` unless absolute
            (e.g. ``captions/narration_llava.jsonl``).
        merge_timeout_s: how long rank 0 waits for the other ranks' ``.done`` markers; past it the rank
            files stay in place and the next run (any world size) merges them.
        fsync: fsync after every batch (on by default; off only for throw-away runs on slow disks).
    """

    def __init__(self, output: str, merge_timeout_s: float = 3600.0, fsync: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_arg = output
        self.merge_timeout_s = merge_timeout_s
        self.fsync = fsync
        self.output: Path | None = None
        self.kind: str | None = None
        self._fd: int | None = None
        self._token = ""
        self._written: set[str] = set()
        self._num_written = 0
        self._t0 = 0.0
        self._rank, self._world = 0, 1

    # ------------------------------------------------------------------ paths
    def resolve_output(self, trainer: L.Trainer) -> Path:
        path = Path(self.output_arg).expanduser()
        if not path.is_absolute():
            dm = getattr(trainer, "datamodule", None)
            root = getattr(dm, "root", None)
            path = (Path(root) if root is not None else Path.cwd()) / path
        return path

    def _mine(self) -> Path:
        assert self.output is not None
        return self.output if self._world == 1 else self.output.with_name(f"{self.output.name}.rank{self._rank}")

    def _marker(self, rank: int) -> Path:
        assert self.output is not None
        return self.output.with_name(f"{self.output.name}.rank{rank}.done")

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.output = self.resolve_output(trainer)
        self.kind = getattr(pl_module, "kind", None)
        self._rank, self._world = trainer.global_rank, trainer.world_size
        self._written, self._num_written = set(), 0
        done: list[str] = []
        token = ""
        if trainer.is_global_zero:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            for path in [self.output, *rank_files(self.output)]:
                _records(path)  # a store damaged before its last line is an error naming it, and stays unchanged
                dropped = repair_jsonl(path)
                if dropped:
                    log.warning(f"caption writer: dropped a torn last line ({dropped} bytes) of {path}")
            for p in self.output.parent.glob(self.output.name + ".rank*.done"):
                p.unlink(missing_ok=True)
            done = sorted(self._existing_ids(pl_module))
            token = uuid.uuid4().hex
        # every rank must filter the same dataset: rank 0 decides, the others receive it
        token, done = trainer.strategy.broadcast((token, done), src=0)
        self._token = token
        dm = getattr(trainer, "datamodule", None)
        _require_text_ids(getattr(dm, "predict_videos", []))
        if dm is not None and hasattr(dm, "predict_exclude"):
            dm.predict_exclude = set(done)
            total = len(getattr(dm, "predict_videos", []))
            if trainer.is_global_zero:
                todo = sum(v.video_id not in dm.predict_exclude for v in dm.predict_videos)
                log.info(f"caption writer: {self.output} ({self.kind}); {total - todo} of {total} videos already "
                         f"captioned, {todo} to go")
        self._written = set(done)
        self._t0 = time.perf_counter()

    def _existing_ids(self, pl_module: L.LightningModule) -> set[str]:
        assert self.output is not None
        ids: set[str] = set()
        prompts: set[str] = set()
        for path in [self.output, *rank_files(self.output)]:
            for rec in _records(path):
                if self.kind is None or rec["kind"] == self.kind:
                    ids.add(rec["video_id"])
                    prompts.add(rec.get("prompt", ""))
        prompt = getattr(pl_module, "prompt", None)
        if prompt is not None and prompts - {prompt}:
            log.warning(f"caption writer: warning: {self.output} holds records made with another prompt; they are "
                        "kept and their videos skipped (write to a new file to caption them again)")
        return ids

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        records = [r for r in (prediction or []) if r["video_id"] not in self._written]
        if not records:
            return
        if self._fd is None:
            self._fd = os.open(self._mine(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        append_records(self._fd, records)
        if self.fsync:
            os.fsync(self._fd)
        self._written.update(r["video_id"] for r in records)
        self._num_written += len(records)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "predict" or self.output is None:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        elapsed = time.perf_counter() - self._t0
        if self._world > 1:
            self._marker(self._rank).write_text(self._token)
        if self._rank == 0:
            if self._world > 1 and not self._wait_for_ranks():
                return
            added = merge_rank_files(self.output, self.kind)
            for r in range(self._world):
                self._marker(r).unlink(missing_ok=True)
            self._write_lineage(pl_module)
            rate = self._num_written / elapsed if elapsed > 0 else 0.0
            merged = f"; merged {added} records from rank files" if added else ""
            log.info(f"caption writer: rank 0 wrote {self._num_written} records in {elapsed:.1f} s "
                     f"({rate:.2f} videos/s){merged} -> {self.output}")

    def _write_lineage(self, pl_module: L.LightningModule) -> None:
        """``<output>.lineage.json``: what the whole store was made from (``datamodules/lineage.py``), rewritten from
        every record of this kind after each run, so a resumed store is described whole."""
        assert self.output is not None
        describe = getattr(pl_module, "store_lineage", None)
        if describe is None or not self.output.is_file():
            return
        from datamodules.lineage import write_sidecar

        records = [r for r in read_jsonl(self.output) if self.kind is None or r.get("kind") == self.kind]
        write_sidecar(self.output, describe(records, self.output))

    def _wait_for_ranks(self) -> bool:
        deadline = time.monotonic() + self.merge_timeout_s
        while time.monotonic() < deadline:
            ok = all(self._marker(r).is_file() and self._marker(r).read_text() == self._token
                     for r in range(self._world))
            if ok:
                return True
            time.sleep(0.2)
        log.warning(f"caption writer: not every rank finished within {self.merge_timeout_s} s; the rank files are "
                    "left in place and the next run merges them")
        return False
