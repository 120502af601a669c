"""``python -m experiments.search index``: encode every video of a folder once and build the search index.

Layout of an index folder::

    build.json        the checkpoint (path, sha256) and settings the shards were encoded with (written first)
    shards/*.pt       one file per encoded batch: ids, the method's video features, search embeddings, failures
    thumbs/*.jpg      a thumbnail strip per video
    embeddings.npy    the search embedding of every indexed video, in row order
    index.faiss       the FAISS index over them (rows = lines of videos.jsonl)
    videos.jsonl      row, id, path, duration and thumbnail of every indexed video
    manifest.json     written last: checkpoint, settings, counts, the unreadable videos and why, the FAISS index

Encoding runs as Lightning ``predict`` (any accelerator, several devices). Each batch is written as its own shard
(a temporary file renamed into place, after its thumbnails), so a run killed at any moment loses at most the batches
in flight, and a rerun encodes only the videos that no shard holds. Videos that fail to decode are recorded in their
shard and listed in the manifest; they are never dropped silently or replaced by zeros. Rerunning on a folder that
gained videos encodes the new ones and rebuilds the FAISS index.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from datamodules.annotations import VideoEntry
from datamodules.captions import CaptionStore
from datamodules.folder import list_videos
from experiments.search.checkpoint import RetrieverCheckpoint, load_retriever
from experiments.search.collection import CollectionDataset, collate_collection
from experiments.search.vector_index import EXACT_BELOW, IndexType, build_vector_index, write_index
from lightning_modules.base import BaseRetrievalModule, as_float32

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUILD = "build.json"


class IndexMismatchError(ValueError):
    """An index folder was built with another checkpoint or other settings than the ones given."""


def thumbnail_name(video_id: str) -> str:
    return hashlib.sha1(video_id.encode()).hexdigest()[:20] + ".jpg"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: Any) -> None:
    _write_atomic(path, (json.dumps(value, indent=1) + "\n").encode())


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
    """Writes each predicted batch as ``shards/<rank>-<run>-<batch>.pt`` (thumbnails first, the shard last)."""

    def __init__(self, out: Path) -> None:
        super().__init__(write_interval="batch")
        self.out = out
        self.run = uuid.uuid4().hex[:8]

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for video_id, meta in prediction["meta"].items():
            _write_atomic(self.out / "thumbs" / thumbnail_name(video_id), meta["thumbnail"])
        shard = {"ids": prediction["ids"], "embedding": prediction.get("embedding"),
                 "features": prediction.get("features", {}),
                 "failed": [{"id": video_id, "error": error} for _, video_id, error in prediction["failed"]],
                 "duration": {k: m["duration"] for k, m in prediction["meta"].items()}}
        buffer = io.BytesIO()
        torch.save(shard, buffer)
        name = f"{trainer.global_rank:03d}-{self.run}-{batch_idx:07d}.pt"
        _write_atomic(self.out / "shards" / name, buffer.getvalue())


def read_shards(out: Path) -> list[dict[str, Any]]:
    """Every complete shard of an index folder (temporary files of a killed run are ignored)."""
    return [torch.load(p, map_location="cpu", weights_only=False) for p in sorted((out / "shards").glob("*.pt"))]


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
    old = json.loads(path.read_text())
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
                progress: bool = True) -> dict[str, Any] | None:
    """Encode the videos not yet in ``out`` and (re)build the FAISS index; returns the manifest (on rank 0)."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    checkpoint = load_retriever(ckpt)
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
    for sub in ("shards", "thumbs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if not (out / BUILD).is_file():
        write_json_atomic(out / BUILD, build)
    done = {vid for shard in read_shards(out) for vid in [*shard["ids"], *(f["id"] for f in shard["failed"])]}
    todo = [e for e in entries if e.video_id not in done]
    log.info("index %s: %d videos, %d already encoded, %d to encode", out, len(entries), len(entries) - len(todo),
             len(todo))
    trainer = None
    if todo:
        dataset = CollectionDataset(todo, settings["reader"], settings["image_size"], settings["num_frames"], stores,
                                    settings["narration_match"])
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate_collection)
        trainer = L.Trainer(accelerator=accelerator, devices=devices, precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                            callbacks=[ShardWriter(out)])
        trainer.predict(CollectionEncoder(checkpoint.module), dataloaders=loader, return_predictions=False)
        trainer.strategy.barrier()
        if trainer.global_rank != 0:
            return None
    manifest = finalize_index(out, entries, build, index_type=index_type, exact_below=exact_below, nlist=nlist,
                              nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search,
                              search_exact=checkpoint.module.search_is_exact())
    manifest["encode_seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def finalize_index(out: Path, entries: list[Any], build: dict[str, Any], index_type: IndexType,
                   exact_below: int, nlist: int | None, nprobe: int, hnsw_m: int, ef_search: int,
                   search_exact: bool) -> dict[str, Any]:
    """Merge the shards in folder order, build the FAISS index and write the row table and the manifest."""
    encoded: dict[str, tuple[torch.Tensor, float | None]] = {}
    failed: dict[str, str] = {}
    for shard in read_shards(out):
        for row, video_id in enumerate(shard["ids"]):
            encoded.setdefault(video_id, (shard["embedding"][row], shard["duration"].get(video_id)))
        for f in shard["failed"]:
            failed.setdefault(f["id"], f["error"])
    rows = [e for e in entries if e.video_id in encoded]
    if not rows:
        raise RuntimeError(f"no video of {build['videos_dir']} could be decoded; see the errors in {out / 'shards'}: "
                           f"{list(failed.items())[:3]}")
    embeddings = torch.stack([encoded[e.video_id][0] for e in rows]).numpy().astype(np.float32)
    index, info = build_vector_index(embeddings, index_type, exact_below=exact_below, nlist=nlist, nprobe=nprobe,
                                     hnsw_m=hnsw_m, ef_search=ef_search)
    buffer = io.BytesIO()
    np.save(buffer, embeddings)
    _write_atomic(out / "embeddings.npy", buffer.getvalue())
    tmp = out / f".index.faiss.{uuid.uuid4().hex}.tmp"
    write_index(index, str(tmp))
    os.replace(tmp, out / "index.faiss")
    lines = [json.dumps({"row": i, "id": e.video_id, "path": str(e.path), "duration": encoded[e.video_id][1],
                         "thumbnail": f"thumbs/{thumbnail_name(e.video_id)}"}) for i, e in enumerate(rows)]
    _write_atomic(out / "videos.jsonl", ("\n".join(lines) + "\n").encode())
    unreadable = [{"id": e.video_id, "path": str(e.path), "error": failed[e.video_id]}
                  for e in entries if e.video_id in failed and e.video_id not in encoded]
    gone = sorted(set(encoded) - {e.video_id for e in entries})
    if unreadable:
        log.warning("%d of %d videos could not be decoded and are not searchable (listed in %s): %s", len(unreadable),
                    len(entries), out / MANIFEST, [u["id"] for u in unreadable[:5]])
    return {**build, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "num_videos": len(entries),
            "num_indexed": len(rows), "num_unreadable": len(unreadable), "unreadable": unreadable,
            "encoded_but_no_longer_in_folder": gone, "index": info,
            "search": {"exact": search_exact,
                       "second_stage": None if search_exact else "the method's similarity on the first stage's top N"}}
