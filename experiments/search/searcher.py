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
from experiments.search.checkpoint import file_sha256, load_retriever
from experiments.search.indexer import FORMAT_VERSION, MANIFEST, IndexMismatchError, read_shards
from experiments.search.vector_index import read_index, search, set_search_parameters
from lightning_modules.base import Features, as_float32

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


class VideoSearchIndex:
    """An index folder opened for queries with the checkpoint it was built with.

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
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found: {self.dir} is not a finished index (build it, or "
                                    "finish it by rerunning, with python -m experiments.search index ...)")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: index format {self.manifest.get('format_version')}, this code reads "
                             f"{FORMAT_VERSION}; rebuild the index")
        recorded = self.manifest["checkpoint"]
        path = Path(ckpt).expanduser() if ckpt else Path(recorded["path"])
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} (recorded in {manifest_path}) not found; pass --ckpt with the "
                                    "checkpoint the index was built with")
        sha = file_sha256(path)
        if sha != recorded["sha256"]:
            raise IndexMismatchError(f"{self.dir} was built with checkpoint {recorded['path']} (sha256 "
                                     f"{recorded['sha256'][:12]}); {path} (sha256 {sha[:12]}) is a different file: "
                                     "its query embeddings would not match the index. Query with the checkpoint the "
                                     "index was built with, or build a new index with this one")
        loaded = load_retriever(path, device)
        self.retriever = loaded.module
        self.retriever_data = loaded.data  # the data settings the checkpoint was trained with
        self.index = read_index(str(self.dir / "index.faiss"))
        set_search_parameters(self.index, nprobe, ef_search)
        self.videos = [json.loads(line) for line in (self.dir / "videos.jsonl").read_text().splitlines() if line]
        if len(self.videos) != self.index.ntotal:
            raise ValueError(f"{self.dir}: videos.jsonl lists {len(self.videos)} videos, index.faiss holds "
                             f"{self.index.ntotal}; rerun the index command to rebuild it")
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
        """The method's per-video features in row order (read from the shards once, for the second stage)."""
        if self._features is None:
            by_id: dict[str, dict[str, torch.Tensor]] = {}
            for shard in read_shards(self.dir):
                for i, video_id in enumerate(shard["ids"]):
                    by_id.setdefault(video_id, {k: v[i] for k, v in shard["features"].items()})
            missing = [v["id"] for v in self.videos if v["id"] not in by_id]
            if missing:
                raise ValueError(f"{self.dir}/shards lacks the features of {len(missing)} indexed videos (first: "
                                 f"{missing[:3]}); rerun the index command")
            keys = by_id[self.videos[0]["id"]].keys()
            self._features = {k: torch.stack([by_id[v["id"]][k] for v in self.videos]) for k in keys}
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
