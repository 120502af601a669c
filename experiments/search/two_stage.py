"""How much a two-stage search loses against a method's full scoring, on a test split with ground truth.

``python -m experiments.search.two_stage --ckpt CKPT --work DIR --out results/search/two_stage_<name>.json``

The checkpoint's own data module gives the test split (videos, queries, the query -> video map). Its videos are
indexed as a folder would be (``experiments.search.indexer``, with the auxiliary captions the checkpoint was trained
with), so the features are the search's own. Then, for the split's queries:

* **full scoring**: the method's evaluation, every query against every video with statistics over the whole
  matrix (``BaseRetrievalModule.score``; NarVid's Eq. 11 z-scores), i.e. what ``main.py test`` reports;
* **first stage**: the FAISS search over the query-independent embeddings alone;
* **two stages at N**: the first stage's top N, re-scored by the method (``rerank``: views fused over the N
  candidates of the query).

Each row gives t2v R@1 (and R@5), the first stage's recall against full scoring (how often full scoring's top-1 is
among the N candidates) and of the ground truth, and the seconds for all queries, one query at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.search.checkpoint import load_retriever
from experiments.search.indexer import build_index
from experiments.search.searcher import VideoSearchIndex
from lightning_modules.metrics import retrieval_metrics

log = logging.getLogger(__name__)


def test_split(ckpt_data: dict[str, Any], class_path: str) -> Any:
    """The checkpoint's data module, set up for ``test``."""
    import importlib

    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    dm = cls(**ckpt_data)
    dm.setup("test")
    return dm


def ranks_of(sim: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """1-based rank of each query's ground-truth video (ties broken against it, as the suite's metrics)."""
    target = sim[np.arange(len(gt)), gt][:, None]
    return (sim > target).sum(1) + 1


def evaluate(ckpt: str | Path, work: str | Path, candidates: Sequence[int], batch_size: int = 16,
             num_workers: int = 2) -> dict[str, Any]:
    work = Path(work)
    checkpoint = load_retriever(ckpt)
    raw = torch.load(checkpoint.path, map_location="cpu", weights_only=False)
    data_class = raw["datamodule_hyper_parameters"]["_class_path"]
    dm = test_split(checkpoint.data, data_class)
    split = dm.splits["test"]
    folder = work / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    for v in split.videos:  # the test split as a folder of the user's own (links, no copies)
        link = folder / f"{v.video_id}{v.path.suffix}"
        if not link.exists():
            link.symlink_to(v.path.resolve())
    captions = {kind: str(path if Path(path).is_absolute() else dm.root / path)
                for kind, path in (checkpoint.data.get("aux_captions") or {}).items()}
    started = time.perf_counter()
    build_index(checkpoint.path, folder, work / "index", captions, batch_size=batch_size, num_workers=num_workers,
                progress=False)
    index_seconds = time.perf_counter() - started
    searcher = VideoSearchIndex(work / "index")
    row_of = {v["id"]: v["row"] for v in searcher.videos}
    missing = [v.video_id for v in split.videos if v.video_id not in row_of]
    if missing:
        raise RuntimeError(f"{len(missing)} test videos are not in the index (unreadable?): {missing[:5]}")
    gt = np.array([row_of[split.videos[t.video].video_id] for t in split.texts])
    queries = [t.text for t in split.texts]
    model = searcher.retriever
    with torch.no_grad():
        text = {}
        for s in range(0, len(queries), 256):
            part = searcher.encode_queries(queries[s:s + 256])
            for k, v in part.items():
                text.setdefault(k, []).append(v)
        text = {k: torch.cat(v) for k, v in text.items()}
        feats = searcher.video_features()
        t0 = time.perf_counter()
        full, _ = model.score(text, feats)
        full_seconds = time.perf_counter() - t0
    full = full.numpy()
    full_top1 = full.argmax(1)
    rows = [_row("full scoring", full, gt, None, None, full_seconds, len(queries))]
    q = model.query_embedding(text).numpy()
    first = q @ model.index_embedding(feats).numpy().T
    rows.append(_row("first stage only", first, gt, None, None, None, len(queries)))
    for n in candidates:
        n = min(n, len(searcher.videos))
        t0 = time.perf_counter()
        results = searcher.search(queries, k=n, rerank=n) if len(queries) else []
        seconds = time.perf_counter() - t0
        sim = np.full_like(full, -np.inf)
        recall_top1 = recall_gt = 0
        for i, r in enumerate(results):
            cand = [h.row for h in r.hits]
            sim[i, cand] = [h.score for h in r.hits]
            recall_top1 += int(full_top1[i] in cand)
            recall_gt += int(gt[i] in cand)
        rows.append(_row(f"two stages, N = {n}", sim, gt, recall_top1 / len(queries), recall_gt / len(queries),
                         seconds, len(queries)))
    base = rows[0]["t2v_R1"]
    for r in rows:
        r["delta_R1"] = round(r["t2v_R1"] - base, 3)
    return {"rows": rows, "method": checkpoint.method, "checkpoint": str(checkpoint.path),
            "checkpoint_sha256": checkpoint.sha256[:12], "dataset": dm.title if hasattr(dm, "title") else data_class,
            "queries": len(queries), "videos": len(searcher.videos),
            "index": searcher.manifest["index"]["type"], "index_seconds": round(index_seconds, 1),
            "timing": "seconds for all queries on this machine's CPU threads (torch default), one query at a time "
                      "for the two-stage rows, one tiled matrix for full scoring"}


def _row(name: str, sim: np.ndarray, gt: np.ndarray, recall_top1: float | None, recall_gt: float | None,
         seconds: float | None, n_queries: int) -> dict[str, Any]:
    metrics = retrieval_metrics(sim, gt)
    return {"search": name, "t2v_R1": round(metrics["t2v_R1"], 3), "t2v_R5": round(metrics["t2v_R5"], 3),
            "first_stage_recall_of_full_top1": "—" if recall_top1 is None else round(recall_top1, 4),
            "first_stage_recall_of_truth": "—" if recall_gt is None else round(recall_gt, 4),
            "ms_per_query": "—" if seconds is None else round(1000 * seconds / n_queries, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.search.two_stage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--work", required=True, help="folder for the test split's links and its index")
    p.add_argument("--out", required=True, help="JSON with one row per search (a README json-table)")
    p.add_argument("--candidates", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    result = evaluate(args.ckpt, args.work, args.candidates, args.batch_size, args.num_workers)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in result["rows"]:
        print(r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
