"""Mean ± std and the paired bootstrap (experiments/results/stats.py)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from experiments.results.stats import bootstrap_means, mean_std, paired_bootstrap, resample_indices


def test_bootstrap_equals_a_direct_loop_and_covers_the_observed_delta() -> None:
    rng = np.random.default_rng(7)
    diff = rng.choice([-1.0, 0.0, 1.0], size=37, p=[0.2, 0.5, 0.3])
    resamples, seed = 2500, 3  # three chunks of resamples
    loop = []
    for idx in resample_indices(diff.size, resamples, seed):
        for row in idx:
            loop.append(sum(diff[i] for i in row) / diff.size)
    np.testing.assert_allclose(bootstrap_means(diff, resamples, seed), loop, rtol=0, atol=1e-12)
    interval = paired_bootstrap(diff, resamples, seed)
    low, high = np.percentile(np.array(loop) * 100, [2.5, 97.5])
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert interval.delta == pytest.approx(diff.mean() * 100)
    assert interval.low <= interval.delta <= interval.high
    # one generator draw of the whole index matrix gives the same resamples (the chunking changes nothing)
    direct = np.random.default_rng(seed).integers(0, diff.size, size=(1000, diff.size))
    np.testing.assert_array_equal(next(resample_indices(diff.size, resamples, seed)), direct)
    assert paired_bootstrap(np.zeros(10), 100, 0).text() == "+0.00 [+0.00, +0.00]"


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1, 2, 4])))
    assert mean_std([3.0]) == (3.0, None)
