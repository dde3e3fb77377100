"""Guaranteed thresholds: Clopper-Pearson bounds and the fixed-sequence scan (calibrate/guarantee.py)."""

import numpy as np
import pytest
import torch
from vlmr.calibrate.fitting import ThresholdCriterion, choose_threshold
from vlmr.calibrate.guarantee import (
    THRESHOLD_GRID,
    guaranteed_threshold,
    min_predicted,
    precision_lower_bound,
    predicted_needed,
)

A = 3.0  # P(y = 1 | score s) = s^(1/A) for s ~ U(0, 1): precision rises smoothly towards 1 at the top


def true_precision(t: float) -> float:
    """E[s^(1/A) | s >= t] for s ~ U(0, 1), in closed form."""
    b = 1.0 / A + 1.0
    return (1.0 - t ** b) / (b * (1.0 - t))


def draw(n, rng):
    s = rng.random(n)
    return s, rng.random(n) < s ** (1.0 / A)


def test_clopper_pearson_matches_known_values():
    # all 45 of 45 correct: the 90% lower bound is 0.1^(1/45), just above 0.95; 44 of 45 falls short
    assert precision_lower_bound(45, 45, 0.9) == pytest.approx(0.1 ** (1 / 45))
    assert precision_lower_bound(44, 45, 0.9) < 0.95 < precision_lower_bound(45, 45, 0.9)
    assert precision_lower_bound(0, 10, 0.9) == 0.0
    assert min_predicted(0.95, 0.9) == 45
    n = predicted_needed(0.99, 0.95, 0.9)
    assert precision_lower_bound(0.99 * n, n, 0.9) >= 0.95 > precision_lower_bound(0.99 * (n - 1), n - 1, 0.9)
    assert predicted_needed(0.95, 0.95, 0.9) is None  # at or below the target, more data never helps


def test_guarantee_holds_on_fresh_data_in_most_repetitions():
    """Over many seeded repetitions the accepted threshold's true precision misses the target at most
    about 1 - confidence of the time; the point estimate on the same data misses it far more often."""
    target, confidence, reps = 0.9, 0.9, 400
    guaranteed_misses, point_misses, accepted = 0, 0, 0
    for seed in range(reps):
        s, y = draw(300, np.random.default_rng(seed))
        choice = guaranteed_threshold(s, y, target, confidence)
        point = choose_threshold(torch.tensor(s, dtype=torch.float32), torch.tensor(y).long(),
                                 ThresholdCriterion("precision_at", target))
        point_misses += true_precision(point.threshold) < target
        if choice.guaranteed:
            accepted += 1
            guaranteed_misses += true_precision(choice.threshold) < target
    assert accepted > reps * 0.5  # the data supports a guarantee in most repetitions
    assert guaranteed_misses / reps <= (1 - confidence) + 0.03
    assert point_misses / reps > 0.3  # the winner's curse the bound corrects


def test_scan_stops_at_the_first_threshold_that_fails():
    # 100 frames at 0.99 (all correct), then 100 at 0.7 (half correct), then 100 at 0.6 (all correct):
    # the pooled precision at 0.6 recovers, but a fixed sequence must not pass through the failure at 0.7
    probs = np.r_[np.full(100, 0.99), np.full(100, 0.7), np.full(100, 0.6)]
    labels = np.r_[np.ones(100), np.tile([1, 0], 50), np.ones(100)].astype(bool)
    choice = guaranteed_threshold(probs, labels, 0.8, 0.9)
    assert choice.guaranteed and 0.7 < choice.threshold <= 0.99
    assert choice.stopped_at is not None and 0.6 < choice.stopped_at <= 0.7
    assert choice.threshold in THRESHOLD_GRID


def test_lower_thresholds_that_add_only_false_positives_are_not_chosen():
    # every positive scores 0.99; below, 3 negatives at 0.3 still pass the bound (100 of 103) but add no recall
    probs = np.r_[np.full(100, 0.99), np.full(3, 0.3), np.full(500, 0.001)]
    labels = np.r_[np.ones(100), np.zeros(503)].astype(bool)
    choice = guaranteed_threshold(probs, labels, 0.9, 0.9)
    assert choice.guaranteed and 0.3 < choice.threshold <= 0.99  # recall 1 with no false positive
    assert choice.stopped_at is not None and choice.stopped_at < 0.3  # the scan itself went below 0.3
    assert choice.bound == pytest.approx(0.1 ** (1 / 100))


def test_too_few_positives_is_not_guaranteed_and_says_what_it_needs():
    probs = np.r_[np.full(20, 0.99), np.full(200, 0.01)]
    labels = np.r_[np.ones(20), np.zeros(200)].astype(bool)
    choice = guaranteed_threshold(probs, labels, 0.95, 0.9)
    assert not choice.guaranteed and choice.threshold is None
    assert choice.best_bound == pytest.approx(0.1 ** (1 / 20))
    assert choice.more_predicted_needed == 45 - 20  # 20 correct of 20 predicted; 45 would reach 0.95
    crit = ThresholdCriterion("precision_at", 0.95, confidence=0.9)
    point = choose_threshold(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels).long(), crit)
    assert point.guarantee is not None and not point.guarantee.guaranteed and point.precision == 1.0


def test_a_bound_past_where_the_scan_stopped_is_reported_as_such():
    """A high-scoring mistake fails the sequence early; the report says so, not "+0 needed"."""
    from vlmr.calibrate.fitting import fit_calibration
    from vlmr.calibrate.report import _bound

    # goal 0: 45 frames scored highest, 3 of them wrong, then 400 right ones a little lower; a negative column
    sims = np.r_[np.full(45, 0.9), np.full(400, 0.6), np.full(2000, 0.0)]
    labels = np.r_[np.r_[np.zeros(3), np.ones(42)], np.ones(400), np.zeros(2000)]
    sims = torch.tensor(np.c_[sims, np.full_like(sims, 0.3)], dtype=torch.float32)
    crit = ThresholdCriterion("precision_at", 0.95, confidence=0.9)
    with pytest.warns(UserWarning, match="no threshold"):
        fit = fit_calibration(sims, torch.tensor(labels[:, None]).long(), crit, goal_names=["g"])
    entry = fit.goals[0]
    assert entry["guaranteed"] is False and entry["best_bound"] >= 0.95 and entry["more_predicted_needed"] == 0
    assert "scan stopped at" in _bound(entry) and "+0" not in _bound(entry)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_confidence_outside_the_open_interval_is_refused(confidence):
    with pytest.raises(ValueError, match="confidence"):
        guaranteed_threshold(np.ones(3), np.ones(3), 0.9, confidence)
