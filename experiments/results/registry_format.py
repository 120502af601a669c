"""The results registry's compact format: what a registered run keeps instead of its similarity matrices.

A study is a folder ``results/<study>/``; each registered run is a folder in it holding

- ``metrics.json``: the run's test record (``test/metrics.json``) with a ``registry`` object (below) and every
  absolute path rewritten (:class:`PathRewriter`);
- ``config.yaml``: the one resolved config the test ran with (``test/config.yaml``, else the run's);
- ``metrics.csv.gz``: the Lightning CSV log, gzip-compressed (the registry's largest text file otherwise);
- ``queries.npz``: the per-query results of ``sim_t2v.npy`` (:class:`QueryResults`); ``queries_<name>.npz`` the
  same for ``sim_t2v_<name>.npy`` (a raw similarity view, or a test-time post-processing flag together with its
  ``sim_v2t_<flag>.npy``); ``metrics_<flag>.json`` and ``expert_usage.json`` when the run has them.

The test split's ids are kept once per study, in ``test_set_<sha256[:12]>.json`` (``text_ids``, ``video_ids``,
``text_to_video``); the rows of every ``queries*.npz`` follow its ``text_ids`` and its videos are columns of
``video_ids``. The ``registry`` object of ``metrics.json`` names that file and its sha256, and for every full
matrix of the run folder: its sha256, shape and dtype, and the compact file made from it (so a matrix fetched from
the W&B artifact of ``register --wandb``, or from git history for the studies migrated from the old layout, can be
checked byte for byte).

``queries*.npz`` holds, for every test query, the 1-based rank of its ground-truth video (pessimistic ties, as
``lightning_modules/metrics.py``), the top ``TOP_K`` video columns (stable order: ties by lower column) and their
scores, and for every video the 1-based video-to-text rank (its best caption, the multi-caption protocol). Ranks and
columns are exact; scores keep ``SCORE_BITS`` significant bits (relative error at most 2^-13, about 1.2e-4: four
significant digits, what the query browser shows). Every metric is a function of the ranks, so the report recomputes
all of them from these files; what needs more than the top ``TOP_K`` of a query (re-scoring, fusing views) needs the
full matrix. Files are written byte-reproducibly (fixed zip timestamps, LZMA) and atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from datamodules.atomic import write_bytes_atomic
from experiments.results.errors import ReportError

FORMAT = 1
TOP_K = 10
SCORE_BITS = 13          # significant bits of a stored score (float32 has 24): see quantize_scores
QUERIES = "queries.npz"
METRICS_CSV = "metrics.csv.gz"
TEST_SET = re.compile(r"test_set_[0-9a-f]{12}\.json")
REGISTRY_KEY = "registry"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: the same bytes whenever a file is written
# an absolute POSIX path inside a longer text (a path alone is rewritten whole): a "/" that follows no word, dot, dash
# or slash, then at least one "name/" (so "K / #test", "1/0.07" and relative paths never match)
EMBEDDED_ABSOLUTE = re.compile(r"(?<![\w.~\-/])/(?:[\w.@+=~-]+/)+[\w.@+=~-]*")


def queries_file(name: str = "") -> str:
    """``queries.npz`` for the plain matrix, ``queries_<name>.npz`` for a view or post-processing flag."""
    return f"queries_{name}.npz" if name else QUERIES


# ---------------------------------------------------------------- reproducible bytes
def gzip_bytes(data: bytes) -> bytes:
    """gzip without a timestamp or file name in the header: equal input, equal bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(data)
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (readable by ``np.load``) with LZMA members and fixed timestamps, in the given key order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_LZMA) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_LZMA
            info.external_attr = 0o644 << 16
            zf.writestr(info, _npy_bytes(array))
    return buf.getvalue()


# ---------------------------------------------------------------- per-query results
def quantize_scores(scores: np.ndarray, bits: int = SCORE_BITS) -> np.ndarray:
    """float32 ``scores`` rounded to ``bits`` significant bits (nearest, ties away from zero), as float32.

    The dropped mantissa bits are zero, so the stored scores compress (LZMA) to about half; rounding twice gives
    the same value, so a score shown from a full matrix and from its compact file is the same number.
    """
    x = np.ascontiguousarray(scores, dtype=np.float32)
    if not 1 <= bits <= 24:
        raise ValueError(f"bits must be in [1, 24] (float32 has 24 significant bits), got {bits}")
    if bits == 24:
        return x.copy()
    drop = 24 - bits
    raw = x.view(np.uint32).astype(np.uint64)
    rounded = (((raw + (1 << (drop - 1))) >> drop) << drop).astype(np.uint32).view(np.float32)
    # a magnitude next to float32's largest would round up to inf: keep those as they were
    return np.where(np.isfinite(x) & ~np.isfinite(rounded), x, rounded)


def _index_dtype(largest: int) -> np.dtype:
    """The smallest unsigned integer type that holds ``largest`` (ranks and columns are stored in it)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@dataclass
class QueryResults:
    """What the report needs of a similarity matrix, per query (text) and per video."""

    t2v_rank: np.ndarray            # [T] int64, 1-based rank of each text's ground-truth video
    t2v_top: np.ndarray             # [T, k] int64, the k best video columns of each text, best first
    t2v_score: np.ndarray           # [T, k] float32, their scores (SCORE_BITS significant bits)
    v2t_rank: np.ndarray | None     # [V] int64, 1-based video-to-text rank; None when the matrix has no v2t

    @property
    def top_k(self) -> int:
        return int(self.t2v_top.shape[1])

    def arrays(self, num_videos: int) -> dict[str, np.ndarray]:
        """The arrays as stored: ranks and columns in the smallest unsigned type that holds ``num_videos``."""
        dtype = _index_dtype(num_videos)
        out = {"t2v_rank": self.t2v_rank.astype(dtype), "t2v_top": self.t2v_top.astype(dtype),
               "t2v_score": self.t2v_score.astype(np.float32)}
        if self.v2t_rank is not None:
            out["v2t_rank"] = self.v2t_rank.astype(dtype)
        return out


def top_columns(sim: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of every row (stable descending order: ties by lower column) and their exact scores;
    rows are sorted ``chunk`` at a time so a large matrix never needs a full int64 copy."""
    k = min(k, sim.shape[1])
    tops, scores = [], []
    for start in range(0, sim.shape[0], chunk):
        block = sim[start:start + chunk]
        order = np.argsort(-block, axis=1, kind="stable")[:, :k]
        tops.append(order)
        scores.append(np.take_along_axis(block, order, axis=1))
    if not tops:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(tops).astype(np.int64), np.concatenate(scores).astype(np.float32)


def query_results(sim: np.ndarray, gt: np.ndarray, v2t_sim: np.ndarray | None = None, v2t: bool = True,
                  k: int = TOP_K) -> QueryResults:
    """Per-query results of a text x video matrix ``sim`` with each text's ground-truth column ``gt``.

    Ranks come from ``lightning_modules.metrics`` (the functions ``metrics.json`` was computed with). ``v2t_sim``
    (still texts x videos) ranks video-to-text when a post-processing scored that direction on its own matrix;
    ``v2t=False`` stores no v2t ranks (a post-processing that left v2t plain).
    """
    from lightning_modules.metrics import ranks_t2v, ranks_v2t

    t2v = ranks_t2v(sim, gt).numpy().astype(np.int64)
    v2t_ranks = ranks_v2t(sim if v2t_sim is None else v2t_sim, gt).numpy().astype(np.int64) if v2t else None
    top, scores = top_columns(np.asarray(sim, dtype=np.float32), k)
    return QueryResults(t2v, top, quantize_scores(scores), v2t_ranks)


def write_queries(path: Path, results: QueryResults, num_videos: int) -> None:
    write_bytes_atomic(path, npz_bytes(results.arrays(num_videos)))


def read_queries(path: Path, test_set: SplitIds) -> QueryResults:
    """A ``queries*.npz`` checked against the study's test set (shapes, ranges, and that a ground truth ranked
    within the top k is among the stored columns)."""
    num_texts, num_videos = len(test_set.text_ids), len(test_set.video_ids)
    fix = (f"re-register the run (`python -m experiments.registry.register`) from its run folder, or restore "
           f"{path.name} from git")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, lzma.LZMAError) as err:
        raise ReportError(f"{path}: not a readable per-query file ({type(err).__name__}: {err}); {fix}") from err
    missing = [key for key in ("t2v_rank", "t2v_top", "t2v_score") if key not in arrays]
    if missing:
        raise ReportError(f"{path}: lacks {', '.join(missing)} (has {', '.join(sorted(arrays)) or 'nothing'}); {fix}")
    rank, top, score = arrays["t2v_rank"], arrays["t2v_top"], arrays["t2v_score"]
    v2t = arrays.get("v2t_rank")
    k = top.shape[1] if top.ndim == 2 else -1
    problems = []
    if rank.shape != (num_texts,) or top.shape != (num_texts, k) or score.shape != top.shape or k < 1:
        problems.append(f"shapes t2v_rank {rank.shape}, t2v_top {top.shape}, t2v_score {score.shape} do not fit "
                        f"{num_texts} texts x {num_videos} videos")
    elif not (np.issubdtype(rank.dtype, np.integer) and np.issubdtype(top.dtype, np.integer)):
        problems.append(f"ranks and columns must be integers (got {rank.dtype}, {top.dtype})")
    elif len(rank) and (rank.min() < 1 or rank.max() > num_videos or top.max() >= num_videos):
        problems.append(f"ranks outside [1, {num_videos}] or columns outside [0, {num_videos})")
    elif not np.isfinite(score).all():
        problems.append("scores that are not finite")
    if v2t is not None and (v2t.shape != (num_videos,) or not np.issubdtype(v2t.dtype, np.integer)
                            or (len(v2t) and (v2t.min() < 1 or v2t.max() > num_videos))):
        problems.append(f"v2t_rank of shape {v2t.shape} does not hold one rank in [1, {num_videos}] per video")
    if problems:
        raise ReportError(f"{path}: {'; '.join(problems)} (test set {test_set.filename}); {fix}")
    rank, top = rank.astype(np.int64), top.astype(np.int64)
    gt = np.asarray(test_set.text_to_video, dtype=np.int64)
    within = np.flatnonzero(rank <= k)
    found = (top[within] == gt[within, None]) & (np.arange(k)[None, :] < rank[within, None])
    lost = within[~found.any(axis=1)]
    if len(lost):
        raise ReportError(f"{path}: text {test_set.text_ids[lost[0]]!r} ranks its ground truth at "
                          f"{rank[lost[0]]} but it is not among its stored top {k} ({len(lost)} such texts): the "
                          f"file does not belong to test set {test_set.filename}; {fix}")
    return QueryResults(rank, top, score.astype(np.float32), None if v2t is None else v2t.astype(np.int64))


def metrics_from_ranks(t2v_rank: np.ndarray, v2t_rank: np.ndarray | None) -> dict[str, float]:
    """``metrics.json``'s rank metrics (``t2v_*``, and ``v2t_*`` with ``rsum`` when v2t ranks are given), computed
    by the same ``summarize_ranks`` that wrote them."""
    from lightning_modules.metrics import RECALL_KS, summarize_ranks

    out = summarize_ranks(t2v_rank, "t2v")
    if v2t_rank is not None:
        out.update(summarize_ranks(v2t_rank, "v2t"))
        out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in RECALL_KS))
    return out


# ---------------------------------------------------------------- the study's test sets
@dataclass(frozen=True)
class SplitIds:
    """A test split as the runs saw it: row ids, column ids, each row's ground-truth column."""

    text_ids: tuple[str, ...]
    video_ids: tuple[str, ...]
    text_to_video: tuple[int, ...]

    def payload(self) -> bytes:
        return json.dumps({"text_ids": list(self.text_ids), "video_ids": list(self.video_ids),
                           "text_to_video": list(self.text_to_video)}, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.payload()).hexdigest()

    @property
    def filename(self) -> str:
        return f"test_set_{self.sha256[:12]}.json"


def ids_from_lists(text_ids: Any, video_ids: Any, gt: Any, where: str) -> SplitIds:
    """Checked ids: two lists of strings (no repeats) and one column index in range per text."""
    if not (isinstance(text_ids, list) and isinstance(video_ids, list) and isinstance(gt, list)):
        raise ReportError(f"{where}: text_ids, video_ids and text_to_video must be lists (re-run `python main.py "
                          "test` for this run)")
    bad = [g for g in gt if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < len(video_ids)]
    if len(gt) != len(text_ids) or bad:
        raise ReportError(f"{where}: text_to_video needs one column index in [0, {len(video_ids)}) per text "
                          f"({len(text_ids)} texts, {len(gt)} entries{', e.g. ' + repr(bad[0]) if bad else ''}); "
                          "re-run `python main.py test` for this run")
    for name, ids in (("text_ids", text_ids), ("video_ids", video_ids)):
        if len(set(map(str, ids))) != len(ids):
            raise ReportError(f"{where}: {name} repeats an id; re-run `python main.py test` for this run")
    return SplitIds(tuple(map(str, text_ids)), tuple(map(str, video_ids)), tuple(gt))


def write_split(study: Path, ids: SplitIds) -> Path:
    """``<study>/test_set_<sha>.json``, written once; an existing file with other bytes is refused."""
    path = study / ids.filename
    data = ids.payload()
    if path.is_file():
        if path.read_bytes() != data:
            raise ReportError(f"{path}: exists with other content than the test set it is named after (sha256 "
                              f"{ids.sha256}); it was edited by hand: restore it from git or delete it and "
                              "re-register the study's runs")
        return path
    study.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return path


def read_split(path: Path, sha256: str | None = None) -> SplitIds:
    try:
        data = path.read_bytes()
        parsed = json.loads(data)
    except FileNotFoundError as err:
        raise ReportError(f"{path}: missing; a registered run's query ids live once per study in this file (copy "
                          "it along with the run folder, or re-register the run)") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a readable test set ({err}); restore it from git") from err
    if not isinstance(parsed, dict):
        raise ReportError(f"{path}: expected an object with text_ids, video_ids and text_to_video")
    ids = ids_from_lists(parsed.get("text_ids"), parsed.get("video_ids"), parsed.get("text_to_video"), str(path))
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ReportError(f"{path}: sha256 differs from the one the run recorded ({sha256[:12]}...): the file was "
                          "edited; restore it from git")
    return ids


# ---------------------------------------------------------------- absolute paths
@dataclass
class PathRewriter:
    """Rewrites the absolute paths a run recorded so the registry holds none.

    - a path in the folder of a run registered into the same study (this run's own checkpoints, or another run's
      that this one re-tests) becomes relative to this run's registry folder (``checkpoints/best.ckpt``,
      ``../bf16/checkpoints/best.ckpt``);
    - a path in the run's data root becomes relative to the current folder through the root's folder name, as the
      shipped configs write it (root ``/srv/x/data`` -> ``data``, ``/srv/x/data/synthvtr-e457/.vtr_cache`` ->
      ``data/synthvtr-e457/.vtr_cache``);
    - any other path (a logger's folder above the run, a caption store of a pipeline's work folder) becomes relative
      to the folder the run had on the machine that made it (``../../../captions/sft.jsonl``).
    """

    origin: PurePosixPath                              # the run folder where the run was made
    data_root: PurePosixPath | None = None             # the run's data root when it was given as an absolute path
    runs: dict[PurePosixPath, str] | None = None       # original folder -> registry name, this study's runs
    name: str = ""                                     # this run's registry name

    def path(self, value: str) -> str:
        p = PurePosixPath(value)
        for folder, name in sorted((self.runs or {}).items(), key=lambda kv: -len(kv[0].parts)):
            if p == folder or folder in p.parents:
                target = PurePosixPath(name) / p.relative_to(folder)
                return posixpath.relpath(str(target), self.name or ".")
        if self.data_root is not None and (p == self.data_root or self.data_root in p.parents):
            return str(PurePosixPath(self.data_root.name) / p.relative_to(self.data_root))
        return posixpath.relpath(str(p), str(self.origin))

    def value(self, value: Any) -> Any:
        """``value`` with every string that is an absolute path rewritten, recursively; a path inside a longer text
        (``trained-captioner(/runs/x/sft/last.ckpt)``, the model name a trained captioner's caption records carry
        into their lineage) is rewritten in place by the same rules."""
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, str) and value.startswith("/"):
            return self.path(value)
        if isinstance(value, str):
            return EMBEDDED_ABSOLUTE.sub(lambda m: self.path(m.group(0)), value)
        return value


def absolute_paths(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` of every string that is or holds an absolute path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from absolute_paths(v, f"{prefix}{k}.")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from absolute_paths(v, f"{prefix}{i}.")
    elif isinstance(value, str) and (value.startswith("/") or EMBEDDED_ABSOLUTE.search(value)):
        yield prefix[:-1], value


def is_registry_record(record: Any) -> bool:
    return isinstance(record, dict) and isinstance(record.get(REGISTRY_KEY), dict)


def registry_info(record: dict[str, Any], where: Path) -> dict[str, Any]:
    """The ``registry`` object of a registered run's ``metrics.json``, checked."""
    info = record.get(REGISTRY_KEY)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ReportError(f"{where}: `registry` is not a format-{FORMAT} registry record (written by `python -m "
                          "experiments.registry.register`); re-register the run")
    if not isinstance(info.get("matrices"), list):
        raise ReportError(f"{where}: `registry.matrices` must be a list; re-register the run")
    return info
