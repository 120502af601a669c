"""Mean ± sample std over seeds, and the paired bootstrap over queries for ΔR@1 between two methods."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from experiments.results.runs import Group, ReportError, TestSet


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample (n - 1) std; std is None for a single value."""
    if not values:
        return math.nan, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt_mean_std(values: list[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def resample_indices(n: int, resamples: int, seed: int, chunk: int = 1000) -> Iterator[np.ndarray]:
    """Bootstrap index draws, ``[rows, n]`` at a time (rows ≤ chunk), from one seeded generator."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        rows = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def bootstrap_means(diff: np.ndarray, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Mean of ``diff`` over each resample of its entries (vectorised per chunk of resamples)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError(f"need a non-empty 1-D array of per-query differences, got shape {diff.shape}")
    return np.concatenate([diff[idx].mean(axis=1) for idx in resample_indices(diff.size, resamples, seed)])


@dataclass
class Interval:
    delta: float   # observed ΔR@1 in points
    low: float
    high: float
    resamples: int

    def text(self) -> str:
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_bootstrap(diff: np.ndarray, resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile interval of the mean per-query difference (in points, ×100)."""
    means = bootstrap_means(diff, resamples, seed) * 100.0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(np.mean(diff) * 100.0), float(low), float(high), resamples)


@dataclass
class Comparison:
    a: Group
    b: Group
    seeds: list[int]                  # matched seed values
    per_seed: list[Interval]          # one per matched seed
    pooled: Interval                  # queries resampled jointly across the seed pairs
    num_queries: int
    note: str = ""


def same_test_set(a: Group, b: Group) -> bool:
    ta, tb = a.runs[0].test, b.runs[0].test
    return sorted(ta.text_ids) == sorted(tb.text_ids) and sorted(ta.video_ids) == sorted(tb.video_ids)


def _hits_by_text(test: TestSet, order: list[str]) -> tuple[np.ndarray, list[str]]:
    """Per-query R@1 hits (0/1) in the order of ``order``'s text ids, and each text's ground-truth video id."""
    pos = {t: i for i, t in enumerate(test.text_ids)}
    gt_video = [test.video_ids[g] for g in test.gt]
    ranks = test.ranks
    return np.array([ranks[pos[t]] == 1 for t in order], dtype=np.float64), [gt_video[pos[t]] for t in order]


def compare(a: Group, b: Group, resamples: int = 10_000, seed: int = 0) -> Comparison:
    """ΔR@1 (t2v) of a minus b, per matched seed and pooled, on queries aligned by text id."""
    if not same_test_set(a, b):
        raise ReportError(f"{a.label} ({a.runs[0].path}) and {b.label} ({b.runs[0].path}) were not tested on the "
                          "same texts and videos (their text and video ids differ); a paired comparison needs "
                          "one test set.")
    seeds_a = {r.seed: r for r in a.runs}
    seeds_b = {r.seed: r for r in b.runs}
    matched = sorted(s for s in seeds_a if s in seeds_b and s is not None)
    note = ""
    if not matched:  # no common seed: pair the runs in seed order so there is still a paired estimate
        pairs = list(zip(a.runs, b.runs, strict=False))
        note = "no common seed value; runs paired in seed order"
    else:
        pairs = [(seeds_a[s], seeds_b[s]) for s in matched]
    order = pairs[0][0].test.text_ids
    diffs = []
    for ra, rb in pairs:
        hits_a, gt_a = _hits_by_text(ra.test, order)
        hits_b, gt_b = _hits_by_text(rb.test, order)
        if gt_a != gt_b:
            raise ReportError(f"{ra.test_dir} and {rb.test_dir}: the same text ids have different "
                              "ground-truth videos; the two runs did not use the same annotations.")
        diffs.append(hits_a - hits_b)
    per_seed = [paired_bootstrap(d, resamples, seed) for d in diffs]
    pooled = paired_bootstrap(np.mean(diffs, axis=0), resamples, seed)
    seeds = matched or [ra.seed for ra, _ in pairs]
    return Comparison(a, b, seeds, per_seed, pooled, len(order), note)
