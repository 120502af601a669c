"""A loaded index and the two-stage search: FAISS over the query-independent embeddings, then (for a method whose
score depends on the query) the method's own similarity on the first stage's top N."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.batch import TextBatch
from experiments.search.checkpoint import IndexMismatchError, load_retriever
from experiments.search.indexer import (
    FORMAT_VERSION,
    MANIFEST,
    PLAIN_NAME,
    ROWS,
    generation_dir,
    ids_sha256,
    read_manifest,
    read_shard,
)
from experiments.search.vector_index import read_index, search, set_search_parameters
from lightning_modules.base import Features, as_float32
from lightning_modules.safe_load import ChecksumMismatchError

DEFAULT_RERANK = 50


@dataclass
class Hit:
    rank: int
    row: int
    video_id: str
    path: str
    score: float
    duration: float | None
    thumbnail: str  # relative to the index folder
    first_stage_score: float


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    seconds: float
    first_stage: int  # candidates the FAISS stage returned
    reranked: bool


def _rows_error(path: Path, line: int, what: str) -> ValueError:
    return ValueError(f"{path}, line {line}: {what}; the index was altered: rerun the index command to rewrite it")


def read_rows(path: Path, index_dir: Path) -> list[dict[str, Any]]:
    """``videos.jsonl`` of a generation, checked row by row: rows in order, ids and paths strings, the thumbnail a
    plain file name under ``thumbs/`` (the page also checks the resolved path before reading it) and the shard a
    plain file name."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 ({exc}); rerun the index command to rewrite it") from None
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _rows_error(path, number, f"not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise _rows_error(path, number, "not a JSON object")
        if row.get("row") != len(rows):
            raise _rows_error(path, number, f"row {row.get('row')!r}, expected {len(rows)}")
        for key in ("id", "path", "thumbnail", "shard"):
            if not isinstance(row.get(key), str):
                raise _rows_error(path, number, f"{key} is not a string")
        if not (isinstance(row.get("shard_row"), int) and row["shard_row"] >= 0):
            raise _rows_error(path, number, "shard_row is not a row number")
        if row.get("duration") is not None and not isinstance(row["duration"], float | int):
            raise _rows_error(path, number, "duration is not a number of seconds")
        if not PLAIN_NAME.fullmatch(row["shard"]):
            raise _rows_error(path, number, f"shard {row['shard']!r} is not a file name in shards/")
        folder, _, name = row["thumbnail"].partition("/")
        if folder != "thumbs" or not PLAIN_NAME.fullmatch(name):
            raise _rows_error(path, number, f"thumbnail {row['thumbnail']!r} is not a file of {index_dir}/thumbs")
        rows.append(row)
    return rows


class VideoSearchIndex:
    """An index folder opened for queries with the checkpoint it was built with.

    Everything in the folder is opened as untrusted: the generation the manifest names is checked (row count, an
    sha256 of the row ids, every row's fields), the checkpoint goes through ``lightning_modules.safe_load`` whether
    it is given or taken from the manifest (whose sha256 only ties the index to the file, it does not vouch for it),
    shards are read with ``weights_only=True``.

    Args:
        index_dir: the ``--out`` folder of ``python -m experiments.search index``.
        ckpt: the checkpoint to encode queries with (default: the one the manifest records); a different file
            (sha256) is refused.
        nprobe / ef_search: override the approximate index's search parameters.
    """

    def __init__(self, index_dir: str | Path, ckpt: str | Path | None = None, nprobe: int | None = None,
                 ef_search: int | None = None, device: str = "cpu") -> None:
        self.dir = Path(index_dir).expanduser()
        manifest_path = self.dir / MANIFEST
        manifest = read_manifest(self.dir)
        if manifest is None:
            raise FileNotFoundError(f"{manifest_path} not found: {self.dir} is not a finished index (build it, or "
                                    "finish it by rerunning, with python -m experiments.search index ...)")
        self.manifest = manifest
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: index format {self.manifest.get('format_version')}, this code reads "
                             f"{FORMAT_VERSION}; rebuild the index")
        self.generation = generation_dir(self.dir, self.manifest)
        try:
            self.videos = read_rows(self.generation / ROWS, self.dir)
            self.index = read_index(str(self.generation / "index.faiss"))
        except (FileNotFoundError, RuntimeError) as exc:
            raise ValueError(f"{self.dir}: generation {self.generation.name} named by {manifest_path} is incomplete "
                             f"or gone ({exc}); if the index was being updated, open it again, else rerun the index "
                             "command") from None
        ids = [v["id"] for v in self.videos]
        expected = self.manifest.get("num_indexed")
        if len(ids) != expected or self.index.ntotal != expected or ids_sha256(ids) != self.manifest.get("ids_sha256"):
            raise ValueError(f"{self.dir}: generation {self.generation.name} does not match {manifest_path} "
                             f"({len(ids)} rows, {self.index.ntotal} vectors, manifest {expected} videos and id "
                             "digest ids_sha256); the index was altered: rerun the index command to rebuild it")
        set_search_parameters(self.index, nprobe, ef_search)
        recorded = self.manifest.get("checkpoint")
        if not (isinstance(recorded, dict) and isinstance(recorded.get("path"), str)
                and isinstance(recorded.get("sha256"), str)
                and isinstance((self.manifest.get("search") or {}).get("exact"), bool)):
            raise ValueError(f"{manifest_path} lacks checkpoint.path, checkpoint.sha256 or search.exact; rerun the "
                             "index command to rewrite it")
        path = Path(ckpt).expanduser() if ckpt else Path(recorded["path"])
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} (recorded in {manifest_path}) not found; pass --ckpt with the "
                                    "checkpoint the index was built with")
        try:
            loaded = load_retriever(path, device, expected_sha256=recorded["sha256"])
        except ChecksumMismatchError as exc:
            raise IndexMismatchError(f"{self.dir} was built with checkpoint {recorded['path']} (sha256 "
                                     f"{recorded['sha256'][:12]}); {path} (sha256 {exc.actual[:12]}) is a different "
                                     "file: its query embeddings would not match the index. Query with the checkpoint "
                                     "the index was built with, or build a new index with this one") from None
        self.retriever = loaded.module
        self.retriever_data = loaded.data  # the data settings the checkpoint was trained with
        self.retriever_data_class = loaded.data_class  # and its (checked) data module class
        self.exact = bool(self.manifest["search"]["exact"])
        self._features: Features | None = None
        self._lock = threading.Lock()  # one query at a time through the model (the local server is threaded)

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode_queries(self, queries: list[str]) -> Features:
        batch = TextBatch(index=torch.arange(len(queries)), video_index=torch.zeros(len(queries), dtype=torch.long),
                          texts=list(queries))
        return as_float32(self.retriever.encode_text(batch))

    def video_features(self) -> Features:
        """The method's per-video features in row order, read once (for the second stage) from the shard and row
        each row of the generation names."""
        if self._features is None:
            by_shard: dict[str, list[dict[str, Any]]] = {}
            for v in self.videos:
                by_shard.setdefault(v["shard"], []).append(v)
            rows: dict[int, dict[str, torch.Tensor]] = {}
            for name, videos in by_shard.items():
                path = self.dir / "shards" / name
                if not path.is_file():
                    raise ValueError(f"{path} (named by {self.generation / ROWS}) is missing; rerun the index command")
                shard = read_shard(path)
                for v in videos:
                    i = v["shard_row"]
                    if i >= len(shard["ids"]) or shard["ids"][i] != v["id"]:
                        raise ValueError(f"{path} does not hold video {v['id']!r} at row {i} (named by "
                                         f"{self.generation / ROWS}); rerun the index command")
                    rows[v["row"]] = {k: t[i] for k, t in shard["features"].items()}
            keys = rows[0].keys()
            if any(r.keys() != keys for r in rows.values()):
                raise ValueError(f"{self.dir}/shards: the shards of {self.generation.name} hold different feature "
                                 "kinds; rerun the index command into a new folder")
            self._features = {k: torch.stack([rows[i][k] for i in range(len(self.videos))]) for k in keys}
        return self._features

    # ------------------------------------------------------------------ search
    def search(self, queries: list[str], k: int = 10, rerank: int | None = DEFAULT_RERANK) -> list[SearchResult]:
        """Top ``k`` videos per query. ``rerank``: first-stage candidates the method re-scores when its score
        depends on the query (ignored for exact methods; 0 keeps the first stage's order)."""
        if k < 1:
            raise ValueError(f"k={k}: ask for at least one result")
        with self._lock:
            return self._search(queries, k, rerank)

    @torch.no_grad()
    def _search(self, queries: list[str], k: int, rerank: int | None) -> list[SearchResult]:
        started = time.perf_counter()
        text = self.encode_queries(queries)
        q = self.retriever.query_embedding(text).float().numpy()
        second = not self.exact and bool(rerank)
        first_k = max(k, rerank or 0) if second else k
        scores, rows = search(self.index, q, first_k)
        results = []
        for i, query in enumerate(queries):
            valid = rows[i] >= 0
            cand, first = rows[i][valid], scores[i][valid]
            final = first
            if second:
                feats = {key: value[torch.as_tensor(cand)] for key, value in self.video_features().items()}
                one = {key: value[i:i + 1] for key, value in text.items()}
                final = self.retriever.rerank(one, feats)[0].numpy()
            order = np.argsort(-final, kind="stable")[:k]
            hits = [self._hit(rank + 1, int(cand[j]), float(final[j]), float(first[j]))
                    for rank, j in enumerate(order)]
            results.append(SearchResult(query, hits, 0.0, len(cand), second))
        elapsed = (time.perf_counter() - started) / max(1, len(queries))
        for r in results:
            r.seconds = elapsed
        return results

    def _hit(self, rank: int, row: int, score: float, first: float) -> Hit:
        v = self.videos[row]
        return Hit(rank, row, v["id"], v["path"], score, v.get("duration"), v["thumbnail"], first)

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"videos": m["num_indexed"], "unreadable": m["num_unreadable"], "method": m["checkpoint"]["method"],
                "index": m["index"]["type"], "exact": self.exact}
