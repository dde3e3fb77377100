"""vlmr.rl.experiments.stats: bootstrap CIs, normalised AUC, JSON-safe NaNs (precision/recall: test_metrics.py)."""

import math

import numpy as np
import pytest
from vlmr.rl.experiments.compare import difference_ci
from vlmr.rl.experiments.stats import (
    bootstrap_band,
    bootstrap_ci,
    nan_to_none,
    normalized_auc,
)


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_agreement():
    mean, lo, hi = bootstrap_ci([0.2, 0.5, 0.9], num_samples=5000)
    assert mean == pytest.approx(1.6 / 3) and 0.2 <= lo < mean < hi <= 0.9
    assert bootstrap_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))
    assert bootstrap_ci([0.4, float("nan")]) == (0.4, 0.4, 0.4)
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))
    m, lo2, hi2 = bootstrap_band(np.array([[0.0, 1.0], [0.0, 0.5]]))
    assert m.tolist() == [0.0, 0.75] and lo2[0] == hi2[0] == 0.0 and lo2[1] >= 0.5 and hi2[1] <= 1.0


def test_difference_ci_sign():
    d, lo, hi = difference_ci([0.9, 0.95, 1.0], [0.1, 0.2, 0.15], 2000, 0.95)
    assert d == pytest.approx(0.8) and lo > 0
    d, lo, hi = difference_ci([0.1, 0.9], [0.5, 0.5], 2000, 0.95)
    assert lo < 0 < hi


def test_normalized_auc():
    assert normalized_auc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert normalized_auc([0, 5, 10], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert normalized_auc([0, 2, 10], [0.0, 1.0, 1.0]) == pytest.approx(0.9)
    assert normalized_auc([7], [0.3]) == pytest.approx(0.3)


def test_nan_to_none():
    assert nan_to_none({"a": [1.0, float("nan")], "b": np.float32(2.0), "c": float("inf")}) == \
        {"a": [1.0, None], "b": 2.0, "c": None}
