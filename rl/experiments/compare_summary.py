"""`vlmr compare`'s statistics: each arm's numbers over its seeds, and the contrasts between arms.

    summarize_arm(results, num_samples=10000, ci=0.95)      # one arm's result.json files -> means, CIs, curves
    contrasts([("adapted", "zero_shot")], arms, 10000, 0.95)  # {"adapted_minus_zero_shot/auc": {...}, ...}

Every interval is a percentile bootstrap over seeds (vlmr.rl.experiments.stats); one seed gives no interval.
"""

from __future__ import annotations

import math

import numpy as np
from vlmr.rl.experiments.stats import bootstrap_band, bootstrap_ci, difference_ci, none_to_nan, normalized_auc

CONTRAST_METRICS = ("final_success", "auc")  # per-seed values a contrast compares


def _stack(curves: list[list], width: int) -> np.ndarray:
    """Curves of several seeds as rows, cut to a common width (a run may have stopped an evaluation early)."""
    return np.stack([none_to_nan(c[:width]) for c in curves])


def summarize_arm(results: list[dict], num_samples: int, ci: float) -> dict:
    def ci_of(values):
        mean, lo, hi = bootstrap_ci(values, num_samples, ci)
        if np.sum(np.isfinite(np.asarray(values, dtype=float))) < 2:
            lo = hi = None  # one seed: no interval
        return {"mean": mean, "lo": lo, "hi": hi, "values": list(values)}

    final = [r["final_success_rate"] for r in results]
    auc = [normalized_auc(r["curves"]["eval_steps"], none_to_nan(r["curves"]["success_rate"])) for r in results]
    quality = [r.get("reward_quality") or {} for r in results]
    precision = [math.nan if q.get("precision") is None else q["precision"] for q in quality]
    recall = [math.nan if q.get("recall") is None else q["recall"] for q in quality]
    width = min(len(r["curves"]["eval_steps"]) for r in results)
    success = _stack([r["curves"]["success_rate"] for r in results], width)
    mean, lo, hi = bootstrap_band(success, min(num_samples, 2000), ci)
    summary = {
        "seeds": [r["seed"] for r in results], "final_success": ci_of(final),
        "final_success_mean": float(np.mean(final)),  # convenience for one-line summaries
        "auc": ci_of(auc),
        "reward_precision": ci_of(precision), "reward_recall": ci_of(recall),
        "sps": float(np.mean([r["sps"] for r in results])),
        "success_curve": {"env_steps": results[0]["curves"]["eval_steps"][:width], "mean": mean.tolist(),
                          "lo": lo.tolist(), "hi": hi.tolist()},
        "reward_model_id": results[0].get("reward_model_id"),
    }
    if any(r["curves"]["precision"] for r in results):
        pw = min(len(r["curves"]["precision"]) for r in results)
        p_mean, p_lo, p_hi = bootstrap_band(_stack([r["curves"]["precision"] for r in results], pw),
                                            min(num_samples, 2000), ci)
        summary["precision_curve"] = {"env_steps": results[0]["curves"]["rollout_steps"][:pw],
                                      "mean": p_mean.tolist(), "lo": p_lo.tolist(), "hi": p_hi.tolist()}
    return summary


def contrast(a: dict, b: dict, metric: str, num_samples: int, ci: float) -> dict:
    """Arm a minus arm b on one metric (two summarize_arm results), with a bootstrap CI.

    The statistic is chosen here. Today it is the difference of the two means with each arm's seeds
    resampled independently, also when both arms ran the same seeds (a["seeds"] == b["seeds"]); a paired
    statistic (a bootstrap of the per-seed differences) would be chosen for that case, here.
    """
    mean, lo, hi = difference_ci(a[metric]["values"], b[metric]["values"], num_samples, ci)
    return {"mean": mean, "lo": lo, "hi": hi, "statistic": "difference of means, seeds resampled per arm"}


def contrasts(pairs: list[tuple[str, str]], arms: list[dict], num_samples: int, ci: float) -> dict:
    """{"A_minus_B/METRIC": contrast} for each configured pair whose two arms have finished runs."""
    by_name = {a["name"]: a for a in arms}
    return {f"{a}_minus_{b}/{metric}": contrast(by_name[a], by_name[b], metric, num_samples, ci)
            for a, b in pairs if a in by_name and b in by_name for metric in CONTRAST_METRICS}
