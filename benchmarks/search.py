"""Search over one's own videos (``experiments/search``): vector-search latency and recall, and indexing throughput.

``--part vectors``: N synthetic unit embeddings (D=512) for N in ``--sizes`` (default 10k, 100k, 1M), clustered as
video embeddings are (N / ``--cluster-size`` random centres; each vector is its centre plus Gaussian noise of norm
``--noise``, renormalised, so that a vector's nearest neighbours share its cluster, unlike uniform random vectors
where no index can beat a scan), and ``--queries`` held-out queries drawn the same way. For each index type (exact
``flat``; ``ivf`` with nlist = 4 sqrt(N) at each ``--nprobe``; ``hnsw`` at each ``--ef-search``) it reports the build
time, the latency of one query at a time (median and 95th percentile; FAISS on ``--threads`` threads) and recall@10
against the exact top 10.

``--part indexing`` (needs ``--ckpt`` and ``--videos``, plus ``--captions`` for a method that reads captions):
videos/s of decoding alone (the collection's data loader without the model), of encoding alone (the method's
video side on already decoded batches) and of the whole ``index`` command, on this machine's CPU threads.

    python -m benchmarks.search --part vectors [--sizes 10000 100000 1000000] \
        [--json results/benchmarks/search_vectors.json]
    python -m benchmarks.search --part indexing --ckpt CKPT --videos DIR [--captions narration=STORE] \
        [--json results/benchmarks/search_indexing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def clustered(n: int, d: int, clusters: int, noise: float, rng: np.random.Generator,
              centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    if centres is None:
        centres = rng.standard_normal((clusters, d)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):  # in blocks: the noise of 1M x 512 at once would double the peak memory
        m = min(n, s + 100_000) - s
        block = centres[rng.integers(0, len(centres), m)] + noise / np.sqrt(d) * rng.standard_normal((m, d)).astype(
            np.float32)
        out[s:s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, centres


def latency_ms(index: Any, queries: np.ndarray, k: int) -> tuple[float, float, np.ndarray]:
    times, found = [], []
    index.search(queries[:1], k)  # warm
    for q in queries:
        t0 = time.perf_counter()
        _, rows = index.search(q[None], k)
        times.append(1000 * (time.perf_counter() - t0))
        found.append(rows[0])
    return float(np.median(times)), float(np.percentile(times, 95)), np.stack(found)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def bench_vectors(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from experiments.search.vector_index import build_vector_index, set_search_parameters

    faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in args.sizes:
        rng = np.random.default_rng(0)
        clusters = max(1, n // args.cluster_size)
        base, centres = clustered(n, args.dim, clusters, args.noise, rng)
        queries, _ = clustered(args.queries, args.dim, clusters, args.noise, rng, centres)
        t0 = time.perf_counter()
        flat, _ = build_vector_index(base, "flat")
        build = time.perf_counter() - t0
        med, p95, exact = latency_ms(flat, queries, args.k)
        rows.append({"vectors": n, "index": "flat (exact)", "parameter": "—", "build_s": round(build, 2),
                     "ms_median": round(med, 3), "ms_p95": round(p95, 3), "recall_at_10": 1.0})
        print(rows[-1], flush=True)
        t0 = time.perf_counter()
        ivf, info = build_vector_index(base, "ivf")
        build = time.perf_counter() - t0
        for nprobe in args.nprobe:
            set_search_parameters(ivf, nprobe=nprobe)
            med, p95, found = latency_ms(ivf, queries, args.k)
            rows.append({"vectors": n, "index": f"ivf (nlist {info['nlist']})", "parameter": f"nprobe {nprobe}",
                         "build_s": round(build, 2), "ms_median": round(med, 3), "ms_p95": round(p95, 3),
                         "recall_at_10": round(recall_at(found, exact), 4)})
            print(rows[-1], flush=True)
        del ivf
        if n <= args.hnsw_max:
            t0 = time.perf_counter()
            hnsw, info = build_vector_index(base, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
            build = time.perf_counter() - t0
            for ef in args.ef_search:
                set_search_parameters(hnsw, ef_search=ef)
                med, p95, found = latency_ms(hnsw, queries, args.k)
                rows.append({"vectors": n, "index": f"hnsw (M {args.hnsw_m}, efConstruction {args.ef_construction})",
                             "parameter": f"efSearch {ef}", "build_s": round(build, 2), "ms_median": round(med, 3),
                             "ms_p95": round(p95, 3), "recall_at_10": round(recall_at(found, exact), 4)})
                print(rows[-1], flush=True)
            del hnsw
        del flat, base
    return {"rows": rows, "benchmark": "search_vectors", "dim": args.dim, "cluster_size": args.cluster_size,
            "noise": args.noise, "queries": args.queries, "k": args.k, "faiss_threads": args.threads,
            "faiss": faiss.__version__}


def bench_indexing(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from datamodules.captions import CaptionStore
    from datamodules.folder import list_videos
    from experiments.search.checkpoint import load_retriever
    from experiments.search.cli import _captions
    from experiments.search.collection import CollectionDataset, collate_collection
    from experiments.search.indexer import CollectionEncoder, build_index, collection_settings

    torch.set_num_threads(args.threads)
    ckpt = load_retriever(args.ckpt)
    entries = list_videos(args.videos)[:args.max_videos]
    settings = collection_settings(ckpt, _captions(args.captions), None, None, None)
    stores = {k: CaptionStore.load(p, k) for k, p in settings["captions"].items()}
    dataset = CollectionDataset(entries, settings["reader"], settings["image_size"], settings["num_frames"], stores,
                                settings["narration_match"])
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=0, collate_fn=collate_collection)
    t0 = time.perf_counter()
    batches = list(loader)
    decode = time.perf_counter() - t0
    encoder = CollectionEncoder(ckpt.module).eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            encoder.predict_step(encoder.on_after_batch_transfer(batch, 0), 0)
    encode = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix="vtr-search-bench-"))
    try:
        videos = folder / "videos"
        videos.mkdir()
        for e in entries:
            (videos / f"{e.video_id.replace('/', '__')}{e.path.suffix}").symlink_to(e.path)
        t0 = time.perf_counter()
        build_index(args.ckpt, videos, folder / "index", _captions(args.captions), batch_size=args.batch_size,
                    num_workers=args.num_workers, progress=False)
        whole = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(entries)
    rows = [{"stage": "decode only (data loader, 1 process)", "videos_per_s": round(n / decode, 2)},
            {"stage": f"encode only ({ckpt.method}, {settings['num_frames']} frames at {settings['image_size']} px)",
             "videos_per_s": round(n / encode, 2)},
            {"stage": f"index command ({args.num_workers} loader workers, incl. model load and FAISS)",
             "videos_per_s": round(n / whole, 2)}]
    for r in rows:
        print(r, flush=True)
    return {"rows": rows, "benchmark": "search_indexing", "videos": n, "method": ckpt.method,
            "checkpoint_sha256": ckpt.sha256[:12], "batch": args.batch_size, "torch_threads": args.threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["vectors", "indexing"], required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--cluster-size", type=int, default=100, help="vectors per cluster (clusters = N / this)")
    p.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the (unit) centre")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this many vectors")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 256])
    p.add_argument("--ckpt", default=None)
    p.add_argument("--videos", default=None)
    p.add_argument("--captions", nargs="*", default=[])
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=2)
    args = p.parse_args()
    if args.part == "indexing" and not (args.ckpt and args.videos):
        p.error("--part indexing needs --ckpt and --videos")
    load = os.getloadavg()[0]
    record = bench_vectors(args) if args.part == "vectors" else bench_indexing(args)
    record.update({"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "load_average_1min_before": round(load, 2), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
