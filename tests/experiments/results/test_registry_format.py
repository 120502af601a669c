"""The registry's compact format (experiments/results/registry_format.py) against naive references: ranks with ties and
multi-caption ground truth, the top-k order, score precision, byte-reproducible files, the checks on reading, the
study's test sets and the rewriting of absolute paths."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from experiments.results import registry_format as registry
from experiments.results.runs import ReportError
from lightning_modules.metrics import retrieval_metrics


def naive(sim: np.ndarray, gt: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t2v ranks, v2t ranks (best caption of each video against every video's best) and the stable top order, by
    loops."""
    t2v = np.array([sum(sim[i, j] >= sim[i, g] for j in range(sim.shape[1])) for i, g in enumerate(gt)])
    group = np.array([[max(sim[i, v] for i in range(len(gt)) if gt[i] == u) for v in range(sim.shape[1])]
                      for u in range(sim.shape[1])])
    v2t = np.array([sum(group[u, v] >= group[v, v] for u in range(sim.shape[1])) for v in range(sim.shape[1])])
    order = np.array([sorted(range(sim.shape[1]), key=lambda j, i=i: (-sim[i, j], j)) for i in range(len(gt))])
    return t2v, v2t, order


@pytest.mark.parametrize(("texts", "videos", "ties"), [(23, 7, True), (30, 15, False), (12, 12, True)])
def test_query_results_match_a_naive_reference(texts: int, videos: int, ties: bool) -> None:
    rng = np.random.default_rng(texts)
    gt = [i % videos for i in range(texts)]
    rng.shuffle(gt)
    sim = rng.normal(size=(texts, videos)).astype(np.float32)
    if ties:
        sim = (np.round(sim * 2) / 2).astype(np.float32)
    t2v, v2t, order = naive(sim, gt)
    found = registry.query_results(sim, np.array(gt))
    k = min(registry.TOP_K, videos)
    assert found.t2v_rank.tolist() == t2v.tolist() and found.v2t_rank.tolist() == v2t.tolist()
    assert found.t2v_top.tolist() == order[:, :k].tolist()
    assert found.t2v_score.tolist() == registry.quantize_scores(np.take_along_axis(sim, order[:, :k], 1)).tolist()
    expected = retrieval_metrics(sim, gt)
    again = registry.metrics_from_ranks(found.t2v_rank, found.v2t_rank)
    assert again == {key: expected[key] for key in again}  # the same functions: equal, not close


def test_rows_sorted_in_chunks_give_the_same_top_columns() -> None:
    sim = np.round(np.random.default_rng(0).normal(size=(50, 9)), 1).astype(np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(registry.top_columns(sim, 4, chunk=7),
                                                    registry.top_columns(sim, 4, chunk=1000), strict=True))


def test_scores_keep_thirteen_significant_bits_and_round_once() -> None:
    x = np.random.default_rng(1).normal(scale=3.0, size=10_000).astype(np.float32)
    x[:4] = [0.0, -0.0, 1e-30, -3.4e38]
    q = registry.quantize_scores(x)
    assert q.dtype == np.float32 and np.isfinite(q).all()
    assert np.all(np.abs(q.astype(np.float64) - x) <= np.abs(x.astype(np.float64)) * 2.0 ** -registry.SCORE_BITS)
    assert np.array_equal(registry.quantize_scores(q), q)  # a score shown from a full matrix = its compact copy
    assert (q.view(np.uint32) & ((1 << (24 - registry.SCORE_BITS)) - 1) == 0).all()
    assert np.array_equal(registry.quantize_scores(x, 24), x)
    assert registry.quantize_scores(np.array([np.float32(3.4028235e38)]))[0] == np.float32(3.4028235e38)  # no inf


def test_queries_file_is_reproducible_readable_by_numpy_and_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sim = rng.normal(size=(20, 300)).astype(np.float32)
    gt = list(rng.integers(0, 300, size=20))
    ids = registry.SplitIds(tuple(f"t{i}" for i in range(20)), tuple(f"v{j}" for j in range(300)),
                            tuple(int(g) for g in gt))
    results = registry.query_results(sim, np.array(gt), v2t=False)
    registry.write_queries(tmp_path / "a.npz", results, 300)
    registry.write_queries(tmp_path / "b.npz", results, 300)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as npz:  # a plain .npz: columns of 300 videos need uint16
        assert sorted(npz.files) == ["t2v_rank", "t2v_score", "t2v_top"] and npz["t2v_top"].dtype == np.uint16
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_LZMA}
    back = registry.read_queries(tmp_path / "a.npz", ids)
    assert back.v2t_rank is None and np.array_equal(back.t2v_rank, results.t2v_rank)

    other = registry.SplitIds(ids.text_ids, ids.video_ids, tuple((g + 1) % 300 for g in ids.text_to_video))
    ranked = int(np.argmax(results.t2v_rank <= registry.TOP_K))
    with pytest.raises(ReportError, match=rf"text 't{ranked}' ranks its ground truth .* does not belong to test set"):
        registry.read_queries(tmp_path / "a.npz", other)
    short = registry.SplitIds(ids.text_ids[:5], ids.video_ids, ids.text_to_video[:5])
    with pytest.raises(ReportError, match=r"a\.npz: shapes .* do not fit 5 texts x 300 videos.*re-register"):
        registry.read_queries(tmp_path / "a.npz", short)
    (tmp_path / "bad.npz").write_bytes((tmp_path / "a.npz").read_bytes()[:200])
    with pytest.raises(ReportError, match=r"bad\.npz: not a readable per-query file"):
        registry.read_queries(tmp_path / "bad.npz", ids)
    buf = io.BytesIO()
    np.savez(buf, t2v_rank=np.zeros(20, dtype=np.int64))
    (tmp_path / "thin.npz").write_bytes(buf.getvalue())
    with pytest.raises(ReportError, match=r"thin\.npz: lacks t2v_top, t2v_score"):
        registry.read_queries(tmp_path / "thin.npz", ids)


def test_a_study_keeps_one_file_per_test_set_and_refuses_an_edited_one(tmp_path: Path) -> None:
    ids = registry.ids_from_lists(["a", "b", "c"], ["x", "y"], [0, 1, 1], "where")
    path = registry.write_split(tmp_path, ids)
    assert path.name == ids.filename and registry.write_split(tmp_path, ids) == path
    assert registry.read_split(path, ids.sha256) == ids
    path.write_text(path.read_text().replace('"a"', '"z"'))
    with pytest.raises(ReportError, match="exists with other content"):
        registry.write_split(tmp_path, ids)
    with pytest.raises(ReportError, match="sha256 differs from the one the run recorded"):
        registry.read_split(path, ids.sha256)
    with pytest.raises(ReportError, match="missing; a registered run's query ids live once per study"):
        registry.read_split(tmp_path / "test_set_000000000000.json")
    with pytest.raises(ReportError, match=r"one column index in \[0, 2\) per text \(3 texts, 3 entries, e.g. 2\)"):
        registry.ids_from_lists(["a", "b", "c"], ["x", "y"], [0, 1, 2], "where")
    with pytest.raises(ReportError, match="text_ids repeats an id"):
        registry.ids_from_lists(["a", "a"], ["x"], [0, 0], "where")


def test_absolute_paths_are_rewritten_relative_to_the_run_the_data_root_or_where_the_run_was_made() -> None:
    made = PurePosixPath("/srv/sweeps/out/run_a/version_0")
    rewriter = registry.PathRewriter(made, PurePosixPath("/mnt/data"),
                                     {made: "a_s0", PurePosixPath("/srv/sweeps/out/run_b/version_0"): "b_s0"}, "a_s0")
    record = {"ckpt_path": "/srv/sweeps/out/run_a/version_0/checkpoints/best.ckpt",
              "retested": "/srv/sweeps/out/run_b/version_0/checkpoints/last.ckpt",
              "data": {"root": "/mnt/data", "cache": "/mnt/data/synthvtr-e457/.vtr_cache/2dee",
                       "relative": "data/synthvtr-17e3", "stores": ["/srv/sweeps/captions/sft.jsonl"]},
              "logger": "/srv/sweeps/out", "count": 3, "protocol": "R@K = min(1, K / #test videos)"}
    assert rewriter.value(record) == {
        "ckpt_path": "checkpoints/best.ckpt", "retested": "../b_s0/checkpoints/last.ckpt",
        "data": {"root": "data", "cache": "data/synthvtr-e457/.vtr_cache/2dee", "relative": "data/synthvtr-17e3",
                 "stores": ["../../../captions/sft.jsonl"]},
        "logger": "../..", "count": 3, "protocol": "R@K = min(1, K / #test videos)"}
    assert list(registry.absolute_paths(rewriter.value(record))) == []
    inside = {"name": 'aux={"n": "/srv/x/n.jsonl"}', "ratio": "1/0.07", "rel": "a/b/c", "up": "../x/y"}
    assert list(registry.absolute_paths(inside)) == [("name", 'aux={"n": "/srv/x/n.jsonl"}')]


def test_registry_records_are_told_from_run_records() -> None:
    assert registry.is_registry_record({"metrics": {}, "registry": {"format": 1}})
    assert not registry.is_registry_record({"metrics": {}}) and not registry.is_registry_record([])
    with pytest.raises(ReportError, match="not a format-1 registry record"):
        registry.registry_info({"registry": {"format": 99}}, Path("x/metrics.json"))
    assert json.loads(registry.SplitIds(("a",), ("x",), (0,)).payload()) == {
        "text_ids": ["a"], "video_ids": ["x"], "text_to_video": [0]}
