"""vlmr.rl.experiments.stats: bootstrap CIs, normalised AUC, JSON-safe NaNs (precision/recall: test_metrics.py)."""

import math

import numpy as np
import pytest
from vlmr.rl.experiments.stats import (
    bootstrap_band,
    bootstrap_ci,
    difference_ci,
    nan_to_none,
    normalized_auc,
)


def test_bootstrap_ci_of_a_constant_sample_has_zero_width_at_that_value():
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    assert bootstrap_ci([0.4, float("nan")]) == (0.4, 0.4, 0.4)  # NaN dropped; one value left: no spread
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def test_bootstrap_ci_of_two_points_follows_the_exact_bootstrap_distribution():
    # resampling [0, 1] twice gives a mean of 0, 0.5 or 1 with probability 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # quantiles are 0 and 1, the 30% and 70% quantiles (a 40% interval) are both 0.5
    assert bootstrap_ci([0.0, 1.0], num_samples=10000, ci=0.95) == (0.5, 0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], num_samples=10000, ci=0.4) == (0.5, 0.5, 0.5)
    mean, lo, hi = bootstrap_band(np.array([[0.0, 1.0], [0.0, 0.5]]), num_samples=10000)
    assert mean.tolist() == [0.0, 0.75] and lo.tolist() == [0.0, 0.5] and hi.tolist() == [0.0, 1.0]


def test_bootstrap_ci_widens_with_the_spread():
    # same seed, same resampled indices: five times the spread around the mean is five times the interval
    _, lo, hi = bootstrap_ci([0.4, 0.5, 0.6], num_samples=2000)
    _, wide_lo, wide_hi = bootstrap_ci([0.0, 0.5, 1.0], num_samples=2000)
    assert hi - lo > 0
    assert wide_hi - wide_lo == pytest.approx(5 * (hi - lo))
    assert (wide_lo, wide_hi) == pytest.approx((0.5 - 5 * (0.5 - lo), 0.5 + 5 * (hi - 0.5)))


def test_difference_ci():
    d, lo, hi = difference_ci([0.9, 0.95, 1.0], [0.1, 0.2, 0.15], 2000, 0.95)
    assert d == pytest.approx(0.8) and lo > 0
    d, lo, hi = difference_ci([0.1, 0.9], [0.5, 0.5], 2000, 0.95)
    assert lo < 0 < hi
    # b constant: the difference's bootstrap distribution is a's, shifted (see the two-point test above)
    assert difference_ci([0.0, 1.0], [0.25, 0.25], 10000, 0.95) == (0.25, -0.25, 0.75)
    assert difference_ci([0.0, 1.0], [0.3], 10000, 0.95) == (pytest.approx(0.2), None, None)  # one seed: no CI


def test_normalized_auc():
    assert normalized_auc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert normalized_auc([0, 5, 10], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert normalized_auc([0, 2, 10], [0.0, 1.0, 1.0]) == pytest.approx(0.9)
    assert normalized_auc([7], [0.3]) == pytest.approx(0.3)


def test_nan_to_none():
    assert nan_to_none({"a": [1.0, float("nan")], "b": np.float32(2.0), "c": float("inf")}) == \
        {"a": [1.0, None], "b": 2.0, "c": None}
