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
from experiments.search.vector_index import search
from lightning_modules.metrics import retrieval_metrics

log = logging.getLogger(__name__)

ROUND = 3  # decimals of every R@K in the output (rows and the checkpoint's registered R@1 alike)


def test_split(ckpt_data: dict[str, Any], data_class: type | None, ckpt: str | Path) -> Any:
    """The checkpoint's data module (its class already checked by ``lightning_modules.safe_load``), set up for
    ``test``."""
    from datamodules.base import VideoTextDataModule

    if data_class is None or not issubclass(data_class, VideoTextDataModule):
        raise ValueError(f"checkpoint {ckpt} names no VideoTextDataModule (datamodule_hyper_parameters._class_path: "
                         f"{getattr(data_class, '__qualname__', None)}); the two-stage evaluation needs the test split "
                         "of the dataset it was trained on")
    dm = data_class(**ckpt_data)
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
    dm = test_split(checkpoint.data, checkpoint.data_class, checkpoint.path)
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
    n_videos = len(searcher.videos)
    one = [{k: v[i:i + 1] for k, v in text.items()} for i in range(len(queries))]
    # per query, text already encoded (both ways encode it the same): every video re-scored by the method ...
    t0 = time.perf_counter()
    for i in range(len(queries)):
        model.rerank(one[i], feats)
    per_query_full = time.perf_counter() - t0
    rows = [_row("full scoring (whole-matrix z-scores)", full, gt, None, None, per_query_full, len(queries))]
    q = model.query_embedding(text).float().numpy()
    t0 = time.perf_counter()
    first_scores, first_rows = search(searcher.index, q, n_videos)  # batched: only its order is used here
    first = np.full_like(full, -np.inf)
    np.put_along_axis(first, first_rows, first_scores, axis=1)
    for i in range(len(queries)):
        search(searcher.index, q[i:i + 1], 10)
    first_seconds = time.perf_counter() - t0
    rows.append(_row("first stage only (FAISS)", first, gt, None, None, first_seconds, len(queries)))
    for n in candidates:
        n = min(n, n_videos)
        sim = np.full_like(full, -np.inf)
        recall_top1 = recall_gt = 0
        t0 = time.perf_counter()
        for i in range(len(queries)):  # ... or the FAISS top N re-scored (views fused over the N)
            _, cand = search(searcher.index, q[i:i + 1], n)
            cand = cand[0]
            sim[i, cand] = model.rerank(one[i], {k: v[torch.as_tensor(cand)] for k, v in feats.items()})[0].numpy()
        seconds = time.perf_counter() - t0
        for i in range(len(queries)):
            cand = np.flatnonzero(np.isfinite(sim[i]))
            recall_top1 += int(full_top1[i] in cand)
            recall_gt += int(gt[i] in cand)
        rows.append(_row(f"two stages, N = {n}", sim, gt, recall_top1 / len(queries), recall_gt / len(queries),
                         seconds, len(queries)))
    base = rows[0]["t2v_R1"]
    for r in rows:
        r["delta_R1"] = round(r["t2v_R1"] - base, ROUND)
    registered = _registered_r1(checkpoint.path)
    return {"rows": rows, "method": checkpoint.method, "checkpoint": str(checkpoint.path),
            "checkpoint_sha256": checkpoint.sha256[:12], "dataset": type(dm).__name__,
            "queries": len(queries), "videos": n_videos, "index": searcher.manifest["index"]["type"],
            "index_seconds": round(index_seconds, 1), "full_scoring_batched_ms_per_query":
                round(1000 * full_seconds / len(queries), 3), **registered,
            "timing": "ms per query on this machine's CPU threads, the query's text encoding excluded (the same for "
                      "every row), one query at a time"}


def latency_by_size(searcher: VideoSearchIndex, queries: list[str], sizes: Sequence[int], n: int,
                    num_queries: int = 50) -> list[dict[str, Any]]:
    """Per-query scoring time as the collection grows: the index's videos repeated to each size (NarVid's cost
    does not depend on what the features hold), a flat FAISS index over them, ``num_queries`` queries one at a time.
    Full scoring re-scores every video; two stages search FAISS, then re-score the top ``n``."""
    from experiments.search.vector_index import build_vector_index

    model = searcher.retriever
    feats = searcher.video_features()
    text = searcher.encode_queries(queries[:num_queries])
    one = [{k: v[i:i + 1] for k, v in text.items()} for i in range(len(queries[:num_queries]))]
    q = model.query_embedding(text).float().numpy()
    rows = []
    with torch.no_grad():
        base = len(searcher.videos)
        for size in sizes:
            reps = -(-size // base)
            tiled = {k: v.repeat(reps, *([1] * (v.dim() - 1)))[:size] for k, v in feats.items()}
            index, _ = build_vector_index(model.index_embedding(tiled).float().numpy(), "flat")
            t0 = time.perf_counter()
            for item in one:
                model.rerank(item, tiled)
            full = 1000 * (time.perf_counter() - t0) / len(one)
            t0 = time.perf_counter()
            for i, item in enumerate(one):
                _, cand = search(index, q[i:i + 1], n)
                model.rerank(item, {k: v[torch.as_tensor(cand[0])] for k, v in tiled.items()})
            two = 1000 * (time.perf_counter() - t0) / len(one)
            rows.append({"videos": size, "full_ms": round(full, 2), "two_stage_ms": round(two, 2),
                         "speedup": round(full / two, 1)})
            log.info("%s", rows[-1])
    return rows


def _registered_r1(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's own ``main.py test`` result when its run folder has one (to compare with full scoring here,
    which encodes the videos through the index's decoding instead of the run's), rounded as the rows are: equal
    metrics then compare equal."""
    metrics = ckpt.parent.parent / "test" / "metrics.json"
    if not metrics.is_file():
        return {}
    return {"checkpoint_test_t2v_R1": round(json.loads(metrics.read_text())["metrics"]["t2v_R1"], ROUND)}


def _row(name: str, sim: np.ndarray, gt: np.ndarray, recall_top1: float | None, recall_gt: float | None,
         seconds: float | None, n_queries: int) -> dict[str, Any]:
    metrics = retrieval_metrics(sim, gt)
    return {"search": name, "t2v_R1": round(metrics["t2v_R1"], ROUND), "t2v_R5": round(metrics["t2v_R5"], ROUND),
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
    p.add_argument("--latency-sizes", type=int, nargs="*", default=[160, 1_600, 16_000],
                   help="collection sizes of the per-query latency comparison (the test videos repeated)")
    p.add_argument("--latency-n", type=int, default=50, help="N of the latency comparison's two-stage search")
    p.add_argument("--latency-out", default=None, help="JSON of the latency comparison (a README json-table)")
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
    if args.latency_out and args.latency_sizes:
        searcher = VideoSearchIndex(Path(args.work) / "index")
        dm = test_split(searcher.retriever_data, searcher.retriever_data_class, args.ckpt)
        rows = latency_by_size(searcher, [t.text for t in dm.splits["test"].texts], args.latency_sizes,
                               args.latency_n)
        Path(args.latency_out).write_text(json.dumps({"rows": rows, "method": result["method"],
                                                      "checkpoint_sha256": result["checkpoint_sha256"],
                                                      "n": args.latency_n, "queries": 50,
                                                      "timing": result["timing"]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
