"""Small statistics for RL results: bootstrap CIs, area under a curve, JSON-safe NaNs.

    bootstrap_ci([0.9, 0.8, 1.0])             # (mean, lo, hi): percentile bootstrap of the mean
    bootstrap_band(curves)                    # per-column mean and CI over seeds (rows)
    difference_ci(a, b)                       # (mean(a) - mean(b), lo, hi): each group resampled on its own
    normalized_auc(steps, success)            # area under success-vs-steps, divided by the step range

Pure numpy; undefined values are NaN inside these arrays, and `nan_to_none` turns them into
JSON nulls. Reward precision/recall of rollouts is vlmr.core.metrics.count_metrics.
"""

from __future__ import annotations

import math

import numpy as np


def bootstrap_ci(values, num_samples: int = 10000, ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean. NaNs are dropped; all-NaN gives (nan, nan, nan)."""
    x = np.asarray(values, dtype=float).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(num_samples, x.size))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def bootstrap_band(curves, num_samples: int = 2000, ci: float = 0.95, seed: int = 0):
    """curves: (S, K) one row per seed -> (mean, lo, hi), each (K,), bootstrapping over seeds per column."""
    curves = np.asarray(curves, dtype=float)
    cols = [bootstrap_ci(curves[:, k], num_samples, ci, seed) for k in range(curves.shape[1])]
    mean, lo, hi = (np.array(c) for c in zip(*cols)) if cols else (np.array([]),) * 3
    return mean, lo, hi


def difference_ci(a, b, num_samples: int = 10000, ci: float = 0.95, seed: int = 0):
    """Mean of a minus mean of b, with a bootstrap CI resampling each group independently (None, None: a group
    has fewer than two values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float(a.mean() - b.mean()), None, None
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, len(a), (num_samples, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (num_samples, len(b)))].mean(1))
    alpha = (1 - ci) / 2
    return float(a.mean() - b.mean()), float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


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
