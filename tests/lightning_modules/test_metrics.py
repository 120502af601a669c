"""Tests for ``lightning_modules.metrics`` against a naive, loop-based numpy reference.

The reference is written to be obviously correct (one Python loop per query, pessimistic ties spelled
out), so any disagreement points at the vectorised/chunked implementation.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from lightning_modules.metrics import ranks_t2v, ranks_v2t, retrieval_metrics, summarize_ranks

# ----------------------------------------------------------------------------- naive reference


def naive_ranks_t2v(sim: np.ndarray, t2v: list[int]) -> list[int]:
    """Rank = number of videos (GT included) whose score is >= the GT score."""
    ranks = []
    for i in range(sim.shape[0]):
        gt = sim[i, t2v[i]]
        ranks.append(sum(1 for j in range(sim.shape[1]) if sim[i, j] >= gt))
    return ranks


def naive_ranks_v2t(sim: np.ndarray, t2v: list[int]) -> list[int]:
    """Group score of video u for query video v = max over u's captions of sim[caption, v]."""
    num_videos = sim.shape[1]
    captions = {u: [i for i in range(sim.shape[0]) if t2v[i] == u] for u in range(num_videos)}
    ranks = []
    for v in range(num_videos):
        group = {u: max(sim[i, v] for i in captions[u]) for u in range(num_videos)}
        ranks.append(sum(1 for u in range(num_videos) if group[u] >= group[v]))
    return ranks


def naive_summary(ranks: list[int], prefix: str) -> dict[str, float]:
    out = {}
    for k in (1, 5, 10):
        out[f"{prefix}_R{k}"] = 100.0 * sum(1 for r in ranks if r <= k) / len(ranks)
    out[f"{prefix}_MdR"] = float(statistics.median(ranks))
    out[f"{prefix}_MnR"] = sum(ranks) / len(ranks)
    return out


def naive_metrics(sim: np.ndarray, t2v: list[int]) -> dict[str, float]:
    out = naive_summary(naive_ranks_t2v(sim, t2v), "t2v")
    out.update(naive_summary(naive_ranks_v2t(sim, t2v), "v2t"))
    out["rsum"] = sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    out["num_texts"] = float(sim.shape[0])
    out["num_videos"] = float(sim.shape[1])
    return out


def assert_metrics_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
        assert isinstance(got[key], float), key


# ----------------------------------------------------------------------------- data helpers


def uneven_captions(num_videos: int, rng: np.random.Generator, max_caps: int = 7) -> list[int]:
    """1..max_caps captions per video, shuffled so a video's captions are not contiguous."""
    t2v = [v for v in range(num_videos) for _ in range(rng.integers(1, max_caps + 1))]
    rng.shuffle(t2v)
    return [int(v) for v in t2v]


def correlated_sim(t2v: list[int], num_videos: int, rng: np.random.Generator, signal: float) -> np.ndarray:
    """Random scores with a bump on the GT so ranks span the whole range, not just 1 or ~N/2."""
    sim = rng.standard_normal((len(t2v), num_videos))
    sim[np.arange(len(t2v)), t2v] += signal
    return sim


# ----------------------------------------------------------------------------- tests


def test_hand_computed_tiny_example():
    # 4 texts, 3 videos; video 0 has two captions (texts 0 and 1).
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # text 0 -> video 0: rank 1
            [0.3, 0.5, 0.3],  # text 1 -> video 0: 0.3 ties video 2 and loses to video 1 -> rank 3
            [0.2, 0.4, 0.6],  # text 2 -> video 1: below video 2 -> rank 2
            [0.1, 0.2, 0.3],  # text 3 -> video 2: rank 1
        ]
    )
    t2v = [0, 0, 1, 2]
    # v2t group scores g[v, u] = max over u's captions of sim[caption, v]:
    #   video 0: g = [max(.9,.3)=.9, .2, .1]  -> rank 1
    #   video 1: g = [max(.1,.5)=.5, .4, .2]  -> rank 2
    #   video 2: g = [max(.2,.3)=.3, .6, .3]  -> own .3 ties group 0, below group 1 -> rank 3
    assert ranks_t2v(sim, t2v).tolist() == [1, 3, 2, 1]
    assert ranks_v2t(sim, t2v).tolist() == [1, 2, 3]
    got = retrieval_metrics(sim, t2v)
    want = {
        "t2v_R1": 50.0,
        "t2v_R5": 100.0,
        "t2v_R10": 100.0,
        "t2v_MdR": 1.5,
        "t2v_MnR": 1.75,
        "v2t_R1": 100.0 / 3.0,
        "v2t_R5": 100.0,
        "v2t_R10": 100.0,
        "v2t_MdR": 2.0,
        "v2t_MnR": 2.0,
        "rsum": 50.0 + 100.0 + 100.0 + 100.0 / 3.0 + 100.0 + 100.0,
        "num_texts": 4.0,
        "num_videos": 3.0,
    }
    assert_metrics_close(got, want)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1024])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("decimals", [None, 1])  # None: continuous scores; 1: many forced ties
def test_matches_naive_multi_caption(chunk_size: int, seed: int, decimals: int | None):
    rng = np.random.default_rng(seed)
    num_videos = 23
    t2v = uneven_captions(num_videos, rng)
    sim = correlated_sim(t2v, num_videos, rng, signal=1.5)
    if decimals is not None:
        sim = np.round(sim, decimals)
    assert len(t2v) != num_videos
    assert_metrics_close(retrieval_metrics(sim, t2v, chunk_size=chunk_size), naive_metrics(sim, t2v))
    assert ranks_t2v(sim, t2v, chunk_size=chunk_size).tolist() == naive_ranks_t2v(sim, t2v)
    assert ranks_v2t(sim, t2v, chunk_size=chunk_size).tolist() == naive_ranks_v2t(sim, t2v)


@pytest.mark.parametrize("chunk_size", [1, 7, 100])
def test_one_caption_per_video_v2t_is_transpose(chunk_size: int):
    rng = np.random.default_rng(3)
    n = 31
    t2v = list(rng.permutation(n))
    sim = np.round(correlated_sim(t2v, n, rng, signal=1.0), 1)
    # Reorder so the GT is on the diagonal; then v2t on sim is t2v on sim.T.
    diag_sim = sim[np.argsort(t2v)]
    v2t = ranks_v2t(diag_sim, list(range(n)), chunk_size=chunk_size)
    assert v2t.tolist() == ranks_t2v(diag_sim.T, list(range(n)), chunk_size=chunk_size).tolist()
    assert ranks_v2t(sim, t2v, chunk_size=chunk_size).tolist() == naive_ranks_v2t(sim, t2v)


@pytest.mark.parametrize(("num_texts", "num_videos"), [(12, 4), (5, 1), (1, 1), (9, 9)])
@pytest.mark.parametrize("value", [0.0, -3.5, 2.0])
def test_constant_matrix_gets_worst_rank(num_texts: int, num_videos: int, value: float):
    t2v = [i % num_videos for i in range(num_texts)]
    sim = np.full((num_texts, num_videos), value, dtype=np.float32)
    assert ranks_t2v(sim, t2v).tolist() == [num_videos] * num_texts
    assert ranks_v2t(sim, t2v).tolist() == [num_videos] * num_videos
    got = retrieval_metrics(sim, t2v)
    expected_r1 = 100.0 if num_videos == 1 else 0.0
    assert got["t2v_R1"] == expected_r1
    assert got["v2t_R1"] == expected_r1
    assert got["t2v_MdR"] == got["t2v_MnR"] == got["v2t_MdR"] == got["v2t_MnR"] == float(num_videos)
    assert_metrics_close(got, naive_metrics(sim.astype(np.float64), t2v))


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_all_negative_scores_still_find_gt(chunk_size: int):
    # torchmetrics' retrieval metrics drop targets with score <= 0; ours must not.
    rng = np.random.default_rng(4)
    num_videos = 15
    t2v = uneven_captions(num_videos, rng, max_caps=3)
    sim = -1.0 - rng.random((len(t2v), num_videos))
    sim[np.arange(len(t2v)), t2v] = -0.5  # GT is the best, yet negative
    got = retrieval_metrics(sim, t2v, chunk_size=chunk_size)
    for key in ("t2v_R1", "t2v_R5", "t2v_R10", "v2t_R1", "v2t_R5", "v2t_R10"):
        assert got[key] == 100.0
    assert got["rsum"] == 600.0
    assert got["t2v_MdR"] == got["t2v_MnR"] == got["v2t_MdR"] == got["v2t_MnR"] == 1.0
    # And a noisy all-negative matrix agrees with the reference.
    noisy = -np.abs(correlated_sim(t2v, num_videos, rng, signal=0.0)) - 1e-3
    assert (noisy < 0).all()
    assert_metrics_close(retrieval_metrics(noisy, t2v, chunk_size=chunk_size), naive_metrics(noisy, t2v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_half_precision_input_is_upcast(dtype: torch.dtype, chunk_size: int):
    rng = np.random.default_rng(5)
    num_videos = 19
    t2v = uneven_captions(num_videos, rng, max_caps=5)
    # Small spread so that half precision produces plenty of exact ties.
    sim_half = torch.from_numpy(correlated_sim(t2v, num_videos, rng, signal=0.3) * 0.01).to(dtype)
    reference_sim = sim_half.to(torch.float64).numpy()  # the exact values the half tensor stores
    got = retrieval_metrics(sim_half, torch.tensor(t2v), chunk_size=chunk_size)
    assert_metrics_close(got, naive_metrics(reference_sim, t2v))


def test_input_types_agree():
    rng = np.random.default_rng(6)
    num_videos = 11
    t2v = uneven_captions(num_videos, rng, max_caps=4)
    sim = np.round(correlated_sim(t2v, num_videos, rng, signal=1.0), 1)
    want = retrieval_metrics(sim, t2v)
    assert retrieval_metrics(torch.from_numpy(sim), torch.tensor(t2v)) == want
    assert retrieval_metrics(sim.astype(np.float32), np.asarray(t2v, dtype=np.int32)) == want
    assert retrieval_metrics(np.ascontiguousarray(sim[::-1])[::-1], tuple(t2v)) == want  # negative strides
    assert ranks_t2v(sim, t2v).dtype == torch.long


def test_summarize_ranks_median_is_numpy_median():
    got = summarize_ranks(torch.tensor([1, 2, 3, 10]), "x")
    assert got == {"x_R1": 25.0, "x_R5": 75.0, "x_R10": 100.0, "x_MdR": 2.5, "x_MnR": 4.0}
    assert summarize_ranks([11], "y")["y_R10"] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(7)
    num_videos = 40
    t2v = uneven_captions(num_videos, rng)
    sim = torch.from_numpy(np.round(correlated_sim(t2v, num_videos, rng, signal=1.5), 1)).half()
    want = retrieval_metrics(sim, t2v, chunk_size=7)
    assert retrieval_metrics(sim.cuda(), torch.tensor(t2v).cuda(), chunk_size=7) == want
    assert ranks_v2t(sim.cuda(), t2v).device.type == "cuda"


# ----------------------------------------------------------------------------- errors


def test_error_video_without_caption():
    sim = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"3 of 6 video\(s\) have no caption .*\[1, 4, 5\]"):
        retrieval_metrics(sim, [0, 2, 3, 0])
    with pytest.raises(ValueError, match="no caption"):
        ranks_v2t(sim, [0, 2, 3, 0])
    # t2v alone does not need every video to be captioned.
    assert ranks_t2v(sim, [0, 2, 3, 0]).tolist() == [6, 6, 6, 6]


@pytest.mark.parametrize(
    ("t2v", "pattern"),
    [
        ([0, 1, 3], r"1 index\(es\) outside \[0, 3\).*positions \[2\] with values \[3\]"),
        ([0, -1, 2], r"1 index\(es\) outside \[0, 3\).*positions \[1\] with values \[-1\]"),
        ([0, 1], r"text_to_video has 2 entries but sim_t2v has 3 texts"),
        (np.array([0.0, 1.0, 2.0]), r"integer video indices"),
        (np.array([[0, 1, 2]]), r"text_to_video must be 1-D"),
    ],
)
def test_error_bad_indices(t2v: object, pattern: str):
    with pytest.raises(ValueError, match=pattern):
        retrieval_metrics(np.eye(3), t2v)  # type: ignore[arg-type]


def test_error_nan_and_shape_and_chunk():
    sim = np.eye(3)
    sim[0, 1] = np.nan
    sim[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"contains 2 NaN value\(s\) out of 9"):
        retrieval_metrics(sim, [0, 1, 2])
    with pytest.raises(ValueError, match=r"must be 2-D .*got shape \(3,\)"):
        retrieval_metrics(np.ones(3), [0, 1, 2])
    with pytest.raises(ValueError, match="at least one text and one video"):
        retrieval_metrics(np.ones((0, 3)), [])
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        retrieval_metrics(np.eye(3), [0, 1, 2], chunk_size=0)


def test_infinite_scores_are_ranked_not_rejected():
    sim = np.array([[np.inf, np.inf], [-np.inf, 0.0]])
    assert ranks_t2v(sim, [0, 1]).tolist() == [2, 1]
    assert ranks_v2t(sim, [0, 1]).tolist() == naive_ranks_v2t(sim, [0, 1])
