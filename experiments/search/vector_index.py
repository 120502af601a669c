"""The FAISS index over the videos' search embeddings (inner product).

``flat`` is exact. ``ivf`` (an inverted file: k-means cells, ``nprobe`` of them scanned per query) and ``hnsw`` (a
navigable small-world graph, ``ef_search`` candidates kept while descending) are approximate; ``auto`` is exact below
``exact_below`` videos and ``ivf`` above. ``benchmarks/search.py`` measures latency and recall@10 against exact
search for each at 10k, 100k and 1M vectors.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

IndexType = Literal["auto", "flat", "ivf", "hnsw"]
EXACT_BELOW = 100_000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # a listed dependency; say how to get it rather than fail deep inside
        raise ImportError("experiments.search needs faiss-cpu: pip install faiss-cpu (see requirements.txt)") from exc
    return faiss


def default_nlist(n: int) -> int:
    """IVF cells: about 4 sqrt(n) (FAISS's guideline), at least 1, and at most n / 39 so that k-means has its
    recommended 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_vector_index(embeddings: np.ndarray, index_type: IndexType = "auto", exact_below: int = EXACT_BELOW,
                       nlist: int | None = None, nprobe: int = 32, hnsw_m: int = 32, ef_construction: int = 200,
                       ef_search: int = 128, train_size: int = 200_000, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """An inner-product index over ``embeddings`` ``[N, D]`` and a description of it (type and parameters)."""
    faiss = _faiss()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf; the checkpoint produced non-finite features")
    n, d = x.shape
    kind = index_type
    if kind == "auto":
        kind = "flat" if n < exact_below else "ivf"
    info: dict[str, Any] = {"type": kind, "dim": d, "metric": "inner_product", "size": n}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        cells = nlist or default_nlist(n)
        if cells > n:
            raise ValueError(f"nlist={cells} exceeds the {n} vectors; lower --nlist or use --index-type flat")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = x if n <= train_size else x[np.sort(rng.choice(n, train_size, replace=False))]
        index.train(sample)
        index.nprobe = min(nprobe, cells)
        info.update(nlist=cells, nprobe=index.nprobe, train_size=len(sample))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        info.update(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    else:
        raise ValueError(f"index type {index_type!r}: use auto, flat, ivf or hnsw")
    index.add(x)
    return index, info


def set_search_parameters(index: Any, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Change the recall/latency trade-off of a loaded index (ignored by the exact index)."""
    faiss = _faiss()
    if nprobe is not None and hasattr(index, "nprobe"):
        faiss.extract_index_ivf(index).nprobe = nprobe
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = ef_search


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` scores and rows per query (rows -1 when the index has fewer than ``k`` videos)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    return index.search(q, min(k, index.ntotal))


def write_index(index: Any, path: str) -> None:
    _faiss().write_index(index, path)


def read_index(path: str) -> Any:
    return _faiss().read_index(path)
