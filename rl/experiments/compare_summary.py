"""`vlmr compare`'s statistics: each arm's numbers over its seeds, and the contrasts between arms.

    summarize_arm(results, num_samples=10000, ci=0.95)      # one arm's result.json files -> means, CIs, curves
    contrasts([("adapted", "zero_shot")], arms, 10000, 0.95)  # {"adapted_minus_zero_shot/auc": {...}, ...}

Every interval is a percentile bootstrap over seeds (vlmr.rl.experiments.stats); one seed gives no interval.
"""

from __future__ import annotations

import numpy as np
from vlmr.rl.experiments.stats import bootstrap_band, bootstrap_ci, difference_ci, none_to_nan, normalized_auc

CONTRAST_METRICS = ("final_success", "auc")  # per-seed values a contrast compares


def _band(curves: list[list], steps: list, num_samples: int, ci: float) -> dict:
    """Curves of several seeds (cut to a common width: a run may have stopped early) -> mean and CI band."""
    width = min(len(c) for c in curves)
    mean, lo, hi = bootstrap_band(np.stack([none_to_nan(c[:width]) for c in curves]), min(num_samples, 2000), ci)
    return {"env_steps": steps[:width], "mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def summarize_arm(results: list[dict], num_samples: int, ci: float) -> dict:
    def ci_of(values):
        mean, lo, hi = bootstrap_ci(values, num_samples, ci)
        if np.sum(np.isfinite(np.asarray(values, dtype=float))) < 2:
            lo = hi = None  # one seed: no interval
        return {"mean": mean, "lo": lo, "hi": hi, "values": list(values)}

    final = [r["final_success_rate"] for r in results]
    auc = [normalized_auc(r["curves"]["eval_steps"], none_to_nan(r["curves"]["success_rate"])) for r in results]
    quality = [r.get("reward_quality") or {} for r in results]
    curves = [r["curves"] for r in results]
    summary = {
        "seeds": [r["seed"] for r in results], "final_success": ci_of(final),
        "final_success_mean": float(np.mean(final)),  # convenience for one-line summaries
        "auc": ci_of(auc),
        "reward_precision": ci_of(none_to_nan([q.get("precision") for q in quality])),
        "reward_recall": ci_of(none_to_nan([q.get("recall") for q in quality])),
        "sps": float(np.mean([r["sps"] for r in results])),
        "success_curve": _band([c["success_rate"] for c in curves], curves[0]["eval_steps"], num_samples, ci),
        "reward_model_id": results[0].get("reward_model_id"),
    }
    if any(c["precision"] for c in curves):
        summary["precision_curve"] = _band([c["precision"] for c in curves], curves[0]["rollout_steps"],
                                           num_samples, ci)
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
