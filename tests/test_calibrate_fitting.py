"""Calibration maths on synthetic scores: the 1-D search, temperature recovery, thresholds, fallback."""

import math
import re
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.fitting import (
    CalibrationWarning,
    ThresholdCriterion,
    choose_threshold,
    fit_calibration,
    goal_nll,
    goal_probs,
    minimize_bounded,
    pooled_nll,
)


def synthetic(n, taus, num_negatives=1, seed=0, scale=0.1):
    """Similarities and labels drawn from the model itself: label_g ~ Bernoulli(P(g|o) at tau_g)."""
    gen = torch.Generator().manual_seed(seed)
    taus = torch.tensor(taus)
    sims = torch.randn(n, len(taus) + num_negatives, generator=gen) * scale
    labels = torch.bernoulli(goal_probs(sims, taus), generator=gen).long()
    return sims, labels


def test_minimize_bounded_finds_interior_bound_and_global_minima():
    x, fx = minimize_bounded(lambda x: (x - 0.3) ** 2 + 1.0, -1.0, 2.0)
    assert abs(x - 0.3) < 1e-5 and abs(fx - 1.0) < 1e-9
    x, _ = minimize_bounded(lambda x: x, -1.0, 2.0)  # monotone: the lower bound
    assert x == -1.0
    x, _ = minimize_bounded(lambda x: -x, -1.0, 2.0)
    assert x == pytest.approx(2.0, abs=1e-6)
    # two basins; golden-section alone from the full bracket would land in the shallow right one
    def f(x):
        return min((x + 2.0) ** 2 - 1.0, 0.5 * (x - 2.5) ** 2 - 0.5)
    x, fx = minimize_bounded(f, -3.0, 4.0)
    assert abs(x + 2.0) < 1e-4 and fx == pytest.approx(-1.0)
    assert minimize_bounded(f, -3.0, 4.0) == (x, fx)  # deterministic
    with pytest.raises(ValueError):
        minimize_bounded(f, 1.0, 1.0)


def test_nll_matches_naive_binary_cross_entropy():
    sims, labels = synthetic(300, [0.05, 0.1], seed=3)
    for g in range(2):
        p = goal_probs(sims, torch.tensor([0.07, 0.07]))[:, g].double()
        naive = torch.nn.functional.binary_cross_entropy(p, labels[:, g].double())
        assert goal_nll(sims, labels[:, g], g, 0.07) == pytest.approx(float(naive), rel=1e-5)
    p = goal_probs(sims, torch.tensor([0.07, 0.07])).double()
    naive = torch.nn.functional.binary_cross_entropy(p, labels.double())
    assert pooled_nll(sims, labels, 0.07) == pytest.approx(float(naive), rel=1e-5)
    # extreme temperatures stay finite (log-space, no 0 * log 0)
    assert math.isfinite(goal_nll(sims, labels[:, 0], 0, 1e-4))


def test_fit_recovers_known_temperatures():
    true = [0.02, 0.05, 0.01]
    sims, labels = synthetic(4000, true, num_negatives=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # a well-posed fit warns about nothing
        fit = fit_calibration(sims, labels, ThresholdCriterion("max_f1"), min_positives=10)
    for got, want in zip(fit.temperatures, true):
        assert abs(got - want) / want < 0.1, (fit.temperatures, true)
    assert not any(e["fallback"] or e["at_bound"] for e in fit.goals)
    assert fit.temperatures == [float(np.float32(t)) for t in fit.temperatures]  # what a float32 buffer holds


def test_separable_scores_give_the_separating_threshold():
    gen = torch.Generator().manual_seed(1)
    pos = 0.6 + 0.4 * torch.rand(200, generator=gen)
    neg = 0.45 * torch.rand(800, generator=gen)
    probs, labels = torch.cat([pos, neg]), torch.cat([torch.ones(200), torch.zeros(800)]).long()
    for crit in (ThresholdCriterion("precision_at", 0.95), ThresholdCriterion("max_f1"), ThresholdCriterion("fbeta", beta=0.5)):
        c = choose_threshold(probs, labels, crit)
        assert neg.max() < c.threshold <= pos.min(), crit
        assert c.precision == 1.0 and c.recall == 1.0
    assert choose_threshold(probs, labels, ThresholdCriterion()).target_met is True


def overlapping(n, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=gen) < 0.3).long()
    logits = torch.randn(n, generator=gen) + 2.5 * labels
    return torch.sigmoid(logits), labels


def test_target_precision_holds_on_held_out_data():
    probs, labels = overlapping(20000, seed=0)
    crit = ThresholdCriterion("precision_at", target_precision=0.95)
    c = choose_threshold(probs, labels, crit)
    assert c.target_met and c.precision >= 0.95
    # largest recall: one step lower would break the constraint on the fitting data
    lower = probs[probs < c.threshold].max()
    pred = probs >= lower
    assert (pred & (labels > 0)).sum() / pred.sum() < 0.95
    test_probs, test_labels = overlapping(20000, seed=1)
    pred = test_probs >= c.threshold
    precision = float((pred & (test_labels > 0)).sum() / pred.sum())
    assert precision >= 0.94, precision  # held out: within sampling noise of the target
    assert 0.05 < c.recall < 0.95


def test_f_beta_trades_precision_for_recall():
    probs, labels = overlapping(5000, seed=2)
    f_half = choose_threshold(probs, labels, ThresholdCriterion("fbeta", beta=0.5))
    f_one = choose_threshold(probs, labels, ThresholdCriterion("max_f1"))
    f_two = choose_threshold(probs, labels, ThresholdCriterion("fbeta", beta=2.0))
    assert f_half.threshold > f_one.threshold > f_two.threshold
    assert f_half.target_met is None
    assert choose_threshold(probs, labels, ThresholdCriterion("fbeta", beta=1.0)) == f_one


def test_unreachable_target_warns_with_best_precision_and_keeps_a_threshold():
    # scores carry no information: precision cannot exceed the base rate by much
    gen = torch.Generator().manual_seed(4)
    sims = torch.randn(2000, 3, generator=gen) * 0.1
    labels = (torch.rand(2000, 2, generator=gen) < 0.3).long()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = fit_calibration(sims, labels, ThresholdCriterion("precision_at", 0.95), min_positives=10,
                              goal_names=["a", "b"])
    messages = [str(w.message) for w in record if w.category is CalibrationWarning]
    # one warning per kind of problem, naming every goal with its best achievable precision
    target = [m for m in messages if "not reachable" in m]
    assert len(target) == 1 and re.search(r"2 goal\(s\): target precision 0.95 .*'a' \(best 0\.\d{4}\), 'b'", target[0])
    assert any("at a bound" in m for m in messages)  # no information: the NLL wants ever larger tau
    # the file and the report get one line per goal
    assert any(re.search(r"goal 'a': target precision 0.95 is not reachable.*best achievable is 0\.\d+", w)
               for w in fit.warnings)
    for g, entry in enumerate(fit.goals):
        assert entry["target_met"] is False
        assert entry["val_precision"] == pytest.approx(entry["best_precision"])
        assert 0.0 <= fit.thresholds[g] <= 1.0 and math.isfinite(fit.thresholds[g])


def test_rare_goals_fall_back_to_shared_values():
    sims, labels = synthetic(3000, [0.02, 0.03, 0.02], seed=5)
    labels[:, 2] = 0
    labels[:3, 2] = 1  # 3 positives: too few
    with pytest.warns(CalibrationWarning, match=r"1 goal\(s\): too little data.*'rare' \(3 positives .* < min_positives 10\)"):
        fit = fit_calibration(sims, labels, ThresholdCriterion("max_f1"), min_positives=10,
                              goal_names=["x", "y", "rare"])
    rare = fit.goals[2]
    assert rare["fallback"] is True and "min_positives" in rare["fallback_reason"]
    assert fit.temperatures[2] == fit.shared["temperature"]
    assert fit.thresholds[2] == fit.shared["threshold"]
    assert [e["fallback"] for e in fit.goals[:2]] == [False, False]
    assert fit.temperatures[0] != fit.shared["temperature"]
    # fitting the same data twice gives the same numbers, bit for bit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        again = fit_calibration(sims, labels, ThresholdCriterion("max_f1"), min_positives=10,
                                goal_names=["x", "y", "rare"])
    assert (again.temperatures, again.thresholds, again.goals) == (fit.temperatures, fit.thresholds, fit.goals)


def test_no_positives_at_all_is_an_error():
    sims = torch.randn(50, 3) * 0.1
    with pytest.raises(ValueError, match="no positive labels"):
        fit_calibration(sims, torch.zeros(50, 2, dtype=torch.long), ThresholdCriterion())
    with pytest.raises(ValueError, match="does not fit"):
        fit_calibration(sims, torch.zeros(40, 2, dtype=torch.long), ThresholdCriterion())
