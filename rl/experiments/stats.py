"""Small statistics for RL results over seeds: intervals of a mean, differences, rank correlation, AUC, JSON NaNs.

    t_interval([0.9, 0.8, 1.0])                    # (mean, lo, hi): mean +- t_{n-1} * s / sqrt(n)
    mean_interval(values, 0.95, "bca", 10000)      # the same with the method named: "t" or "bca" (BCa bootstrap)
    seed_record(values, 0.95, "t")                 # {"mean", "lo", "hi", "n", "values"}: what results.json keeps
    paired_difference(a, b, 0.95, "t")             # per-seed a_i - b_i: (mean, lo, hi, n pairs)
    unpaired_difference(a, b, 0.95, "t")           # mean(a) - mean(b): Welch's t-interval (or BCa)
    rank_correlation(x, y)                         # {"rho", "p", "n"}: Spearman over the pairs where both are defined
    normalized_auc(steps, success)                 # area under success-vs-steps, divided by the step range

Undefined values are NaN (or None) in the inputs and are skipped; an interval that cannot be formed (fewer than
two values) is NaN, and `nan_to_none` turns it into a JSON null. Quantiles come from scipy, never from a table.
Reward precision/recall of rollouts is vlmr.core.metrics.count_metrics.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

METHODS = {"t": "t-interval", "bca": "BCa bootstrap"}  # config value -> name in reports
MIN_SEEDS = 5  # below this many seeds a report says its intervals are rough (issue: 3 seeds gave zero-width CIs)
NAN3 = (math.nan, math.nan, math.nan)


def finite(values) -> np.ndarray:
    """values (None, NaN allowed) -> 1-D float array of the defined ones."""
    x = none_to_nan(np.asarray(values, dtype=object).reshape(-1))
    return x[np.isfinite(x)]


def t_interval(values, ci: float = 0.95) -> tuple[float, float, float]:
    """Mean and its t-interval over the defined values; one value: (value, nan, nan); none: all nan.

    The t-distribution with n - 1 degrees of freedom is the exact interval for the mean of normal values and, unlike
    a bootstrap, widens for small n instead of collapsing onto the sample (3 seeds: 10 distinct resamples).
    """
    x = finite(values)
    if x.size == 0:
        return NAN3
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + ci) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def _bootstrap(data: tuple, statistic, ci: float, num_samples: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():  # degenerate resamples give NaN bounds, which the caller reports as no interval
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, n_resamples=num_samples, confidence_level=ci, method="BCa",
                              vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def bca_interval(values, ci: float = 0.95, num_samples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its BCa bootstrap interval (scipy.stats.bootstrap); equal values: the zero-width interval."""
    x = finite(values)
    if x.size < 2:
        return t_interval(x, ci)
    mean = float(x.mean())
    if np.all(x == x[0]):  # every resample is the same sample: BCa's acceleration is 0/0
        return mean, mean, mean
    lo, hi = _bootstrap((x,), lambda s, axis: np.mean(s, axis=axis), ci, num_samples, seed)
    return mean, lo, hi


def mean_interval(values, ci: float = 0.95, method: str = "t", num_samples: int = 10000) -> tuple[float, float, float]:
    """(mean, lo, hi) by the named method: "t" (t-interval) or "bca" (BCa bootstrap)."""
    if method == "t":
        return t_interval(values, ci)
    if method == "bca":
        return bca_interval(values, ci, num_samples)
    raise ValueError(f"interval method {method!r}: use one of {list(METHODS)}")


def seed_record(values, ci: float = 0.95, method: str = "t", num_samples: int = 10000) -> dict:
    """One metric over seeds as results.json keeps it: mean, interval, number of defined values, the values."""
    mean, lo, hi = mean_interval(values, ci, method, num_samples)
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(finite(values).size),
            "values": [None if v is None or not math.isfinite(v) else float(v) for v in none_to_nan(values)]}


def interval_band(curves, ci: float = 0.95, method: str = "t", num_samples: int = 2000):
    """curves: (S, K) one row per seed -> (mean, lo, hi), each (K,): the interval over seeds per column."""
    curves = np.asarray(curves, dtype=float)
    cols = [mean_interval(curves[:, k], ci, method, num_samples) for k in range(curves.shape[1])]
    return tuple(np.array(c) for c in zip(*cols)) if cols else (np.array([]),) * 3


def paired_difference(a, b, ci: float = 0.95, method: str = "t", num_samples: int = 10000):
    """Mean of the per-seed differences a_i - b_i (a and b aligned by seed) and its interval: (mean, lo, hi, n).

    Pairs where either value is undefined are dropped. Pairing removes what two arms share on a seed (the same
    training and evaluation environments), which an unpaired interval counts as noise twice.
    """
    d = none_to_nan(a) - none_to_nan(b)
    d = d[np.isfinite(d)]
    return (*mean_interval(d, ci, method, num_samples), int(d.size))


def unpaired_difference(a, b, ci: float = 0.95, method: str = "t", num_samples: int = 10000):
    """mean(a) - mean(b) for independent groups: Welch's t-interval (or BCa, each group resampled on its own)."""
    if method not in METHODS:
        raise ValueError(f"interval method {method!r}: use one of {list(METHODS)}")
    a, b = finite(a), finite(b)
    if a.size == 0 or b.size == 0:
        return NAN3
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return mean, math.nan, math.nan
    if a.var() == 0 and b.var() == 0:  # no spread in either group: Welch's standard error is 0/0
        return mean, mean, mean
    if method == "bca":
        lo, hi = _bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis), ci,
                            num_samples, 0)
        return mean, lo, hi
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval(ci)
    return mean, float(interval.low), float(interval.high)


def rank_correlation(x, y) -> dict:
    """Spearman's rho over the pairs where both values are defined, with a two-sided permutation p-value:
    {"rho", "p", "n"}; rho is None with fewer than 3 pairs or a constant side (no ranking to correlate)."""
    xs, ys = none_to_nan(x), none_to_nan(y)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = int(keep.sum())
    if n < 3 or np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return {"rho": None, "p": None, "n": n}
    rho = float(stats.spearmanr(xs, ys).statistic)
    # spearmanr's own p-value is a large-sample approximation (p = 0 for 3 points in order); a permutation test
    # is exact at the sizes here (every pairing up to 7 points)
    test = stats.permutation_test((xs,), lambda x: stats.spearmanr(x, ys).statistic, permutation_type="pairings",
                                  vectorized=False, n_resamples=9999, rng=np.random.default_rng(0))
    return {"rho": rho, "p": float(test.pvalue), "n": n}


def normalized_auc(steps, values) -> float:
    """Trapezoidal area under values(steps), divided by the step range: a mean level in [min, max] of values."""
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.size < 2 or x[-1] == x[0]:
        return float(y[-1]) if y.size else math.nan
    return float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(x)) / (x[-1] - x[0]))


def nan_to_none(obj):
    """Recursively replace float NaN/inf with None so the result is strict JSON."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return nan_to_none(obj.item())
    return obj


def none_to_nan(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)
