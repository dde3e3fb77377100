"""Thresholds with a finite-sample precision guarantee: Clopper-Pearson bounds scanned Learn-then-Test style.

    choice = guaranteed_threshold(probs, labels, target=0.95, confidence=0.9)
    choice.guaranteed, choice.threshold, choice.bound       # bound: lower confidence bound on precision there

The method (Angelopoulos, Bates, Candes, Jordan, Lei, "Learn then Test: Calibrating Predictive
Algorithms to Achieve Risk Control", 2021, with fixed-sequence testing):

- For a threshold t, H_t says "precision at t is below the target". Among the n frames at or above t,
  the k correct ones are Binomial(n, precision(t)), so the exact one-sided Clopper-Pearson lower bound
  (Clopper and Pearson, 1934) at level `confidence` reaching the target is the same as rejecting H_t
  with p-value P(Binomial(n, target) >= k) <= 1 - confidence.
- The thresholds are a grid fixed before seeing data (THRESHOLD_GRID), tested from the highest down;
  the scan stops at the first one whose bound misses the target. Fixed-sequence testing needs no
  multiplicity correction, so with probability at least `confidence` no threshold whose true precision
  is below the target is accepted: the guarantee survives the scan.
- A bound can only reach the target once at least `min_predicted(target, confidence)` frames are
  predicted positive (45 at 0.95 / 0.9, all of them correct). Grid points above that count carry no
  evidence and are passed over; they are fixed by the scores alone, not the labels, so the sequence is
  still fixed given the scores.

The chosen threshold gives the largest recall the guarantee allows, that of the lowest accepted one; among
the accepted thresholds with that same recall it is the highest, as the point estimate breaks its ties: going
lower would add only false positives, rewards an agent would farm. Any accepted threshold carries the
guarantee, so the choice among them costs nothing. The guarantee
takes the temperature that turned similarities into probabilities as given; it is one parameter fitted
by likelihood on the same split, a far smaller choice than the threshold scan this corrects for.

Tests: `.venv/bin/python -m pytest tests/test_calibrate_guarantee.py -q`
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# logit(t) from 10 down to -10 in steps of 0.25: t from 0.99995 down to 0.00005, 81 thresholds fixed in advance;
# float32 values, as the reward model stores thresholds, so P >= t means the same here and at reward time
THRESHOLD_GRID = (1.0 / (1.0 + np.exp(-np.arange(10.0, -10.0 - 1e-9, -0.25)))).astype(np.float32).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class GuaranteedChoice:
    guaranteed: bool  # some threshold's lower bound reached the target within the fixed sequence
    threshold: float | None  # the highest accepted threshold with the most recall (None when not guaranteed)
    bound: float | None  # the lower confidence bound on precision at that threshold
    best_bound: float  # the highest lower bound at any grid threshold (what the data can show at best)
    best_threshold: float | None  # where that best bound is
    more_predicted_needed: int | None  # not guaranteed: extra predicted positives the best threshold would need
    # at its observed precision for its bound to reach the target; None when that precision is <= the target
    stopped_at: float | None  # the first threshold of the sequence whose bound missed the target (None: none did)


def precision_lower_bound(correct, predicted, confidence: float):
    """One-sided Clopper-Pearson lower bound on precision from `correct` of `predicted` (arrays or scalars)."""
    from scipy.stats import beta

    correct, predicted = np.asarray(correct, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    ok = correct > 0
    bound = beta.ppf(1.0 - confidence, np.where(ok, correct, 1.0), np.where(ok, predicted - correct + 1.0, 1.0))
    return np.where(ok, bound, 0.0)


def min_predicted(target: float, confidence: float) -> int:
    """Fewest predicted positives, all correct, whose lower bound reaches the target: target^n <= 1 - confidence."""
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(target))) if target < 1 else 10**9


def predicted_needed(precision: float, target: float, confidence: float, limit: int = 10**7) -> int | None:
    """Fewest predicted positives at an observed precision whose bound reaches the target (None if never)."""
    if precision <= target:
        return None

    def reaches(n: int) -> bool:
        return float(precision_lower_bound(precision * n, n, confidence)) >= target

    if not reaches(limit):
        return None
    lo, hi = 1, limit  # reaches() is monotone in n at a fixed observed precision
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid + 1, hi)
    return lo


def guaranteed_threshold(probs, labels, target: float, confidence: float,
                         grid: np.ndarray = THRESHOLD_GRID) -> GuaranteedChoice:
    """The grid threshold chosen among those the fixed-sequence Clopper-Pearson scan accepts (module docstring)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1) > 0
    order = np.argsort(-probs, kind="stable")
    sorted_probs, correct_so_far = probs[order], np.concatenate([[0], np.cumsum(labels[order])])
    # frames with P >= t, for every t at once: the sorted scores are descending, so count via the negated scores
    predicted = np.searchsorted(-sorted_probs, -np.asarray(grid), side="right")
    correct = correct_so_far[predicted]
    bounds = precision_lower_bound(correct, predicted, confidence)

    accepted, stopped, passed = None, None, []
    for i in np.flatnonzero(predicted >= min_predicted(target, confidence)):  # the fixed sequence, highest first
        if bounds[i] < target:
            stopped = float(grid[i])
            break
        passed.append(i)
    if passed:  # the most recall (the lowest accepted), at the highest threshold that keeps all of it
        accepted = next(i for i in passed if correct[i] == correct[passed[-1]])
    best = int(np.argmax(bounds)) if len(bounds) else None
    best_bound = float(bounds[best]) if best is not None else 0.0
    if accepted is not None:
        return GuaranteedChoice(True, float(grid[accepted]), float(bounds[accepted]), best_bound,
                                float(grid[best]), None, stopped)
    needed = None
    if best is not None and predicted[best] > 0:
        total = predicted_needed(correct[best] / predicted[best], target, confidence)
        needed = None if total is None else max(0, total - int(predicted[best]))
    return GuaranteedChoice(False, None, None, best_bound, None if best is None else float(grid[best]), needed,
                            stopped)
