"""``python -m experiments.search index``: encode every video of a folder once and build the search index.

Layout of an index folder::

    build.json        the checkpoint (path, sha256) and settings the shards were encoded with (written first)
    shards/*.pt       one file per encoded batch: ids, the size and mtime of each source file, the method's video
                      features, search embeddings, failures
    thumbs/*.jpg      a thumbnail strip per video (per version of its file)
    generations/<g>/  one complete state of the index: embeddings.npy (search embeddings in row order), index.faiss
                      (the FAISS index over them), videos.jsonl (row, id, path, duration, thumbnail, shard)
    manifest.json     written last, by one rename: the generation in use, the checkpoint, settings, counts, an
                      sha256 of the row ids, the unreadable videos and why, the FAISS index

Encoding runs as Lightning ``predict`` (any accelerator, several devices). Each batch is written as its own shard
(a temporary file renamed into place, after its thumbnails), so a run killed at any moment loses at most the batches
in flight. A shard records the size and modification time of every file it encoded (or failed to decode); a rerun
encodes the videos no shard holds *in their current version* (new files, replaced or modified ones), retries failures
when asked (``retry_failed``), and writes a new generation. Readers only follow ``manifest.json``: until its rename
they see the previous generation whole, after it the new one whole, never a mix (a kill at any step leaves one of
the two). Videos that fail to decode are recorded in their shard and listed in the manifest; they are never dropped
silently or replaced by zeros. Shards, thumbnails and index files are opened as untrusted
(``lightning_modules.safe_load``: ``weights_only=True``; row tables validated).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from datamodules.annotations import VideoEntry
from datamodules.atomic import write_bytes_atomic, write_json_atomic
from datamodules.captions import CaptionStore
from datamodules.folder import list_videos
from experiments.search.checkpoint import (
    IndexMismatchError,
    NoSearchEmbeddingError,
    RetrieverCheckpoint,
    load_retriever,
    require_search_embedding,
)
from experiments.search.collection import CollectionDataset, collate_collection
from experiments.search.vector_index import EXACT_BELOW, IndexType, build_vector_index, write_index
from lightning_modules.base import BaseRetrievalModule, as_float32
from lightning_modules.safe_load import load_tensors

__all__ = ["BUILD", "FORMAT_VERSION", "MANIFEST", "IndexMismatchError", "NoSearchEmbeddingError", "build_index",
           "read_shards"]

log = logging.getLogger(__name__)

# 2: generations switched by the manifest, source size/mtime in shards (format 1 folders are refused: rebuild them)
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BUILD = "build.json"
GENERATIONS = "generations"
ROWS = "videos.jsonl"
PLAIN_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")


def source_stat(path: Path) -> dict[str, int]:
    """What identifies a version of a video file: its size and modification time (ns), as make and rsync do (hashing
    every video on every rerun would read the whole collection)."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def thumbnail_name(video_id: str, source: dict[str, int]) -> str:
    """A thumbnail per version of a video, so an older generation never shows a newer file's frames."""
    key = json.dumps([video_id, source["size"], source["mtime_ns"]])
    return hashlib.sha256(key.encode()).hexdigest()[:24] + ".jpg"


def ids_sha256(ids: list[str]) -> str:
    """The digest the manifest records of the row ids, in row order (checked when an index is opened)."""
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()



def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())



class CollectionEncoder(L.LightningModule):
    """Runs a retriever's video side in ``predict``: the method's features (kept for a second-stage rerank) and
    its query-independent search embedding."""

    def __init__(self, retriever: BaseRetrievalModule) -> None:
        super().__init__()
        self.retriever = retriever

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.retriever.on_after_batch_transfer(batch["video"], dataloader_idx)  # uint8 -> normalised frames
        return batch

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        video = batch["video"]
        out: dict[str, Any] = {"ids": list(video.video_ids), "failed": list(video.failed), "meta": batch["meta"]}
        if len(video) == 0:
            return out
        feats = as_float32(self.retriever.encode_video(video))
        out["embedding"] = self.retriever.index_embedding(feats).float().cpu()
        out["features"] = {k: v.detach().cpu() for k, v in feats.items() if isinstance(v, torch.Tensor)}
        return out


class ShardWriter(BasePredictionWriter):
    """Writes each predicted batch as ``shards/<rank>-<run>-<batch>.pt`` (thumbnails first, the shard last), with the
    size and mtime each file had when the run listed it (``sources``)."""

    def __init__(self, out: Path, sources: dict[str, dict[str, int]]) -> None:
        super().__init__(write_interval="batch")
        self.out = out
        self.sources = sources
        self.run = uuid.uuid4().hex[:8]

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for video_id, meta in prediction["meta"].items():
            thumbnail = self.out / "thumbs" / thumbnail_name(video_id, self.sources[video_id])
            write_bytes_atomic(thumbnail, meta["thumbnail"])
        failed = [{"id": video_id, "error": error} for _, video_id, error in prediction["failed"]]
        shard = {"ids": prediction["ids"], "embedding": prediction.get("embedding"),
                 "features": prediction.get("features", {}), "failed": failed,
                 "duration": {k: m["duration"] for k, m in prediction["meta"].items()},
                 "sources": {v: self.sources[v] for v in [*prediction["ids"], *(f["id"] for f in failed)]}}
        buffer = io.BytesIO()
        torch.save(shard, buffer)
        name = f"{trainer.global_rank:03d}-{self.run}-{batch_idx:07d}.pt"
        write_bytes_atomic(self.out / "shards" / name, buffer.getvalue())


def _shard_error(path: Path, what: str) -> ValueError:
    return ValueError(f"shard {path}: {what}; it was not written by this version of the index command (or was "
                      "altered): delete it and rerun the index command, which re-encodes its videos")


def _is_source(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"size", "mtime_ns"}
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()))


def read_shard(path: Path) -> dict[str, Any]:
    """One shard, loaded as untrusted (``weights_only=True``) and checked: ids, embeddings and features agree."""
    shard = load_tensors(path, "cpu", "index shard")
    if not isinstance(shard, dict) or not {"ids", "embedding", "features", "failed", "duration",
                                           "sources"} <= set(shard):
        raise _shard_error(path, "not a shard (a dict with ids, embedding, features, failed, duration, sources)")
    ids, embedding, features = shard["ids"], shard["embedding"], shard["features"]
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise _shard_error(path, "ids is not a list of strings")
    if ids and not (isinstance(embedding, torch.Tensor) and embedding.dim() == 2 and len(embedding) == len(ids)):
        raise _shard_error(path, f"embedding is not a [{len(ids)}, D] tensor")
    if not (isinstance(features, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               and v.dim() >= 1 and len(v) == len(ids) for k, v in features.items())):
        raise _shard_error(path, f"features is not a dict of tensors with {len(ids)} rows")
    failed = shard["failed"]
    if not (isinstance(failed, list) and all(isinstance(f, dict) and isinstance(f.get("id"), str)
                                             and isinstance(f.get("error"), str) for f in failed)):
        raise _shard_error(path, "failed is not a list of {id, error} strings")
    duration = shard["duration"]
    if not (isinstance(duration, dict) and all(d is None or isinstance(d, float | int) for d in duration.values())):
        raise _shard_error(path, "duration is not a dict of seconds")
    sources = shard["sources"]
    if not (isinstance(sources, dict) and all(_is_source(sources.get(v))
                                              for v in [*ids, *(f["id"] for f in failed)])):
        raise _shard_error(path, "sources does not give the size and mtime_ns of every video")
    shard["file"] = path.name
    return shard


def read_shards(out: Path) -> list[dict[str, Any]]:
    """Every complete shard of an index folder, in name order (temporary files of a killed run are ignored); each
    dict also names its ``file``."""
    return [read_shard(p) for p in sorted((Path(out) / "shards").glob("*.pt"))]


@dataclass
class _Encoded:
    embedding: torch.Tensor
    duration: float | None
    shard: str
    row: int


def current_records(shards: list[dict[str, Any]], sources: dict[str, dict[str, int]]
                    ) -> tuple[dict[str, _Encoded], dict[str, str]]:
    """Per video of the folder, its encoding (or decode failure) for the file's *current* size and mtime; shards of
    an older version of a file (replaced, modified) do not count. The first shard in name order wins."""
    encoded: dict[str, _Encoded] = {}
    failed: dict[str, str] = {}
    for shard in shards:
        for row, video_id in enumerate(shard["ids"]):
            if video_id not in encoded and shard["sources"][video_id] == sources.get(video_id):
                encoded[video_id] = _Encoded(shard["embedding"][row], shard["duration"].get(video_id), shard["file"],
                                             row)
        for f in shard["failed"]:
            if shard["sources"][f["id"]] == sources.get(f["id"]):
                failed.setdefault(f["id"], f["error"])
    return encoded, {k: v for k, v in failed.items() if k not in encoded}


def collection_settings(ckpt: RetrieverCheckpoint, captions: dict[str, str], num_frames: int | None,
                        image_size: int | None, reader: str | None) -> dict[str, Any]:
    """Frame sampling and captions: the checkpoint's data settings unless overridden; every auxiliary caption kind
    the method was trained with must be given for the collection."""
    data = ckpt.data
    settings = {"num_frames": num_frames or data.get("num_frames"), "image_size": image_size or data.get("image_size"),
                "reader": reader or data.get("reader", "decord"),
                "narration_match": data.get("narration_match", "exact")}
    missing = [k for k in ("num_frames", "image_size") if not settings[k]]
    if missing:
        raise ValueError(f"checkpoint {ckpt.path} does not record the data settings {missing}; pass "
                         + " ".join(f"--{k.replace('_', '-')}" for k in missing))
    trained_with = dict(data.get("aux_captions") or {})
    needed = sorted(trained_with)
    absent = [k for k in needed if k not in captions]
    if absent:
        raise ValueError(f"{ckpt.method} ({ckpt.path.name}) was trained with auxiliary captions "
                         f"{ {k: trained_with[k] for k in absent} }: pass --captions {absent[0]}=<JSONL store with a "
                         f"record for every video of the folder> (write one with python main.py predict and a "
                         f"captioner config, see the README's 'Search your own videos')")
    unused = sorted(set(captions) - set(needed))
    if unused:
        raise ValueError(f"--captions {unused}: {ckpt.method} ({ckpt.path.name}) reads no such captions "
                         f"(trained with {needed or 'none'})")
    settings["captions"] = {k: str(Path(v).expanduser().resolve()) for k, v in sorted(captions.items())}
    return settings


def by_collection_id(store: CaptionStore, entries: list[VideoEntry]) -> CaptionStore:
    """``store`` with a record under every collection id it captions. A collection id is the video's relative path
    without its extension, but a dataset whose ids are file names (DiDeMo: ``<id>.mp4``) keys the stores ``predict``
    writes for it by the name with the extension: a video with no record under its id takes the record of its
    relative path with the extension, if there is one (``require`` names the ids still missing)."""
    records = dict(store)
    for entry in entries:
        named = entry.video_id + entry.path.suffix
        if entry.video_id not in records and named in store:
            records[entry.video_id] = store[named]
    return CaptionStore(store.path, store.kind, records)


def _check_build(out: Path, build: dict[str, Any]) -> None:
    path = out / BUILD
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); index into a new --out folder or delete this one"
                         ) from None
    if not isinstance(old, dict) or old.get("format_version") != FORMAT_VERSION:
        version = old.get("format_version") if isinstance(old, dict) else None
        raise IndexMismatchError(f"{out} holds an index of format {version}, this code writes format "
                                 f"{FORMAT_VERSION}; index into a new --out folder, or delete this one to rebuild it")
    if old.get("checkpoint", {}).get("sha256") != build["checkpoint"]["sha256"]:
        raise IndexMismatchError(
            f"{out} was built with checkpoint {old['checkpoint']['path']} (sha256 {old['checkpoint']['sha256'][:12]}), "
            f"not {build['checkpoint']['path']} (sha256 {build['checkpoint']['sha256'][:12]}); index into a new --out "
            "folder, or delete this one to rebuild it")
    if old.get("settings") != build["settings"] or old.get("videos_dir") != build["videos_dir"]:
        raise IndexMismatchError(f"{out} was built with other settings ({old.get('settings')}, videos "
                                 f"{old.get('videos_dir')}) than now ({build['settings']}, videos "
                                 f"{build['videos_dir']}); index into a new --out folder or delete this one")


def build_index(ckpt: str | Path, videos: str | Path, out: str | Path, captions: dict[str, str] | None = None,
                batch_size: int = 16, num_workers: int = 2, accelerator: str = "auto", devices: int | str = 1,
                precision: str = "32-true", index_type: IndexType = "auto", exact_below: int = EXACT_BELOW,
                nlist: int | None = None, nprobe: int = 32, hnsw_m: int = 32, ef_search: int = 128,
                num_frames: int | None = None, image_size: int | None = None, reader: str | None = None,
                progress: bool = True, retry_failed: bool = False) -> dict[str, Any] | None:
    """Encode the videos ``out`` does not hold in their current version (and, with ``retry_failed``, the ones that
    failed to decode), then write a new generation of the index; returns the manifest (on rank 0)."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    checkpoint = load_retriever(ckpt)
    require_search_embedding(checkpoint.module, checkpoint.path)  # before the folder is listed or anything decoded
    entries = list_videos(videos)
    settings = collection_settings(checkpoint, captions or {}, num_frames, image_size, reader)
    build = {"format_version": FORMAT_VERSION, "videos_dir": str(Path(videos).expanduser().resolve()),
             "checkpoint": {"path": str(checkpoint.path), "sha256": checkpoint.sha256, "method": checkpoint.method},
             "settings": settings}
    _check_build(out, build)
    stores = {}
    for kind, path in settings["captions"].items():
        stores[kind] = by_collection_id(CaptionStore.load(path, kind), entries)
        stores[kind].require(e.video_id for e in entries)  # names the store, the missing ids and the command
    for sub in ("shards", "thumbs", GENERATIONS):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not (out / BUILD).is_file():
        write_json_atomic(out / BUILD, build, indent=1)
    # the version of each file as listed now: what its shard records, and what a later rerun compares with
    sources = {e.video_id: source_stat(e.path) for e in entries}
    encoded, failed = current_records(read_shards(out), sources)
    todo = [e for e in entries if e.video_id not in encoded and (retry_failed or e.video_id not in failed)]
    log.info("index %s: %d videos, %d encoded in their current version, %d failed before%s, %d to encode", out,
             len(entries), len(encoded), len(failed), " (retried)" if retry_failed else "", len(todo))
    if todo:
        dataset = CollectionDataset(todo, settings["reader"], settings["image_size"], settings["num_frames"], stores,
                                    settings["narration_match"])
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_collection)
        trainer = L.Trainer(accelerator=accelerator, devices=devices, precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                            callbacks=[ShardWriter(out, sources)])
        trainer.predict(CollectionEncoder(checkpoint.module), dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return None
    return finalize_index(out, entries, sources, build, index_type=index_type, exact_below=exact_below, nlist=nlist,
                          nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                          search_exact=checkpoint.module.search_is_exact(), started=started)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an index folder (None when there is none yet)."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun the index command to rewrite it") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object; rerun the index command to rewrite it")
    return manifest


def generation_dir(out: Path, manifest: dict[str, Any]) -> Path:
    """The folder of the generation a manifest names (a plain name under ``generations/``, nothing else)."""
    name = manifest.get("generation")
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{out / MANIFEST}: generation {name!r} is not a generation folder name; rerun the index "
                         "command to rewrite the manifest")
    return out / GENERATIONS / name


def finalize_index(out: Path, entries: list[Any], sources: dict[str, dict[str, int]], build: dict[str, Any],
                   index_type: IndexType, exact_below: int, nlist: int | None, nprobe: int, hnsw_m: int,
                   ef_search: int, search_exact: bool, started: float) -> dict[str, Any]:
    """Write a new generation from the shards (rows in folder order), then switch to it by renaming the manifest;
    the generations no manifest can name any more are removed after the switch."""
    shards = read_shards(out)
    encoded, failed = current_records(shards, sources)
    rows = [e for e in entries if e.video_id in encoded]
    if not rows:
        raise RuntimeError(f"no video of {build['videos_dir']} could be decoded; see the errors in {out / 'shards'}: "
                           f"{list(failed.items())[:3]}")
    lost = [e.video_id for e in entries if e.video_id not in encoded and e.video_id not in failed]
    if lost:  # every listed video is encoded or failed once predict returns; a shard missing means a lost batch
        raise RuntimeError(f"{len(lost)} videos of {build['videos_dir']} have no shard in {out / 'shards'} (first: "
                           f"{lost[:3]}); rerun the index command to encode them")
    embeddings = torch.stack([encoded[e.video_id].embedding for e in rows]).numpy().astype(np.float32)
    index, info = build_vector_index(embeddings, index_type, exact_below=exact_below, nlist=nlist, nprobe=nprobe,
                                     hnsw_m=hnsw_m, ef_search=ef_search)
    previous = read_manifest(out)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder = out / GENERATIONS / name
    folder.mkdir(parents=True)
    lines = [json.dumps({"row": i, "id": e.video_id, "path": str(e.path), "duration": encoded[e.video_id].duration,
                         "thumbnail": f"thumbs/{thumbnail_name(e.video_id, sources[e.video_id])}",
                         "shard": encoded[e.video_id].shard, "shard_row": encoded[e.video_id].row})
             for i, e in enumerate(rows)]
    try:
        # nothing names this folder until the manifest's rename below, so its files are written in place (synced
        # before the switch); a kill before the rename leaves an unused folder, removed by the next finalize
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        _write_synced(folder / "embeddings.npy", buffer.getvalue())
        write_index(index, str(folder / "index.faiss"))
        with (folder / "index.faiss").open("rb") as fh:
            os.fsync(fh.fileno())
        _write_synced(folder / ROWS, ("\n".join(lines) + "\n").encode())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    unreadable = [{"id": e.video_id, "path": str(e.path), "error": failed[e.video_id]}
                  for e in entries if e.video_id in failed]
    listed = {e.video_id for e in entries}
    gone = sorted({v for shard in shards for v in shard["ids"]} - listed)
    if unreadable:
        log.warning("%d of %d videos could not be decoded and are not searchable (listed in %s; rerun with "
                    "--retry-failed to try them again): %s", len(unreadable), len(entries), out / MANIFEST,
                    [u["id"] for u in unreadable[:5]])
    second_stage = None if search_exact else "the method's similarity on the first stage's top N"
    manifest = {**build, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "generation": name,
                "num_videos": len(entries), "num_indexed": len(rows),
                "ids_sha256": ids_sha256([e.video_id for e in rows]), "num_unreadable": len(unreadable),
                "unreadable": unreadable, "encoded_but_no_longer_in_folder": gone, "index": info,
                "search": {"exact": search_exact, "second_stage": second_stage},
                "encode_seconds": round(time.perf_counter() - started, 3)}
    try:
        write_json_atomic(out / MANIFEST, manifest, indent=1)  # the switch
    except BaseException:
        current = read_manifest(out)
        if not current or current.get("generation") != name:  # interrupted before the rename took effect
            shutil.rmtree(folder, ignore_errors=True)
        raise
    keep = {name, previous.get("generation") if previous else None}  # a reader may still be opening the previous one
    for old in (out / GENERATIONS).iterdir():
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return manifest
