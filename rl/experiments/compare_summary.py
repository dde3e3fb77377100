"""`vlmr compare`'s statistics: each arm's numbers over its seeds, and the contrasts between arms.

    summarize_arm(results, 0.95, "t", 10000)                 # one arm's result.json files -> per-seed values, intervals
    contrasts([("adapted", "zero_shot")], arms, 0.95, "t")   # {"adapted_minus_zero_shot/auc": {...}, ...}
    interval_note(arms, 0.95, "t")                            # how to read the brackets; says when seeds are few

Every metric keeps its per-seed values (aligned with the arm's `seeds`) next to its mean and interval, so a later
report can recompute any statistic. Intervals are over seeds (vlmr.rl.experiments.stats); one seed gives none.
"""

from __future__ import annotations

import numpy as np
from vlmr.rl.experiments.stats import (
    METHODS,
    MIN_SEEDS,
    interval_band,
    none_to_nan,
    normalized_auc,
    paired_difference,
    seed_record,
    unpaired_difference,
)

CONTRAST_METRICS = ("final_success", "auc")  # per-seed values a contrast compares


def _band(curves: list[list], steps: list, ci: float, method: str, num_samples: int) -> dict:
    """Curves of several seeds (cut to a common width: a run may have stopped early) -> mean and interval band."""
    width = min(len(c) for c in curves)
    mean, lo, hi = interval_band(np.stack([none_to_nan(c[:width]) for c in curves]), ci, method,
                                 min(num_samples, 2000))
    return {"env_steps": steps[:width], "mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def summarize_arm(results: list[dict], ci: float, method: str = "t", num_samples: int = 10000) -> dict:
    def record(values):
        return seed_record(values, ci, method, num_samples)

    final = [r["final_success_rate"] for r in results]
    auc = [normalized_auc(r["curves"]["eval_steps"], none_to_nan(r["curves"]["success_rate"])) for r in results]
    quality = [r.get("reward_quality") or {} for r in results]
    curves = [r["curves"] for r in results]
    summary = {
        "seeds": [r["seed"] for r in results], "final_success": record(final),
        "final_success_mean": float(np.mean(final)),  # convenience for one-line summaries
        "auc": record(auc),
        "reward_precision": record([q.get("precision") for q in quality]),
        "reward_recall": record([q.get("recall") for q in quality]),
        "sps": record([r["sps"] for r in results]),
        "success_curve": _band([c["success_rate"] for c in curves], curves[0]["eval_steps"], ci, method, num_samples),
        "reward_model_id": results[0].get("reward_model_id"),
    }
    if any(c["precision"] for c in curves):
        summary["precision_curve"] = _band([c["precision"] for c in curves], curves[0]["rollout_steps"], ci, method,
                                           num_samples)
    return summary


def contrast(a: dict, b: dict, metric: str, ci: float, method: str = "t", num_samples: int = 10000) -> dict:
    """Arm a minus arm b on one metric (two summarize_arm results), with an interval.

    Where the arms share seeds (two or more), the difference is paired by seed: the mean of a_s - b_s over the shared
    seeds s, with the interval of that mean. Same seed, same training and evaluation environments, so pairing
    removes what the arms have in common. Arms without shared seeds are compared unpaired (Welch, or BCa).
    """
    va, vb = dict(zip(a["seeds"], a[metric]["values"])), dict(zip(b["seeds"], b[metric]["values"]))
    shared = [s for s in a["seeds"] if s in vb]
    name = METHODS[method]
    if len(shared) >= 2:
        mean, lo, hi, n = paired_difference([va[s] for s in shared], [vb[s] for s in shared], ci, method, num_samples)
        return {"mean": mean, "lo": lo, "hi": hi, "n": n, "paired": True, "seeds": shared,
                "statistic": f"paired by seed: mean of the per-seed differences over {n} shared seeds, {name}"}
    mean, lo, hi = unpaired_difference(list(va.values()), list(vb.values()), ci, method, num_samples)
    test = "Welch's t-interval" if method == "t" else name
    return {"mean": mean, "lo": lo, "hi": hi, "n": None, "paired": False, "seeds": None,
            "statistic": f"unpaired (the arms share fewer than two seeds): difference of means, {test}"}


def contrasts(pairs: list[tuple[str, str]], arms: list[dict], ci: float, method: str = "t",
              num_samples: int = 10000) -> dict:
    """{"A_minus_B/METRIC": contrast} for each configured pair whose two arms have finished runs."""
    by_name = {a["name"]: a for a in arms}
    return {f"{a}_minus_{b}/{metric}": contrast(by_name[a], by_name[b], metric, ci, method, num_samples)
            for a, b in pairs if a in by_name and b in by_name for metric in CONTRAST_METRICS}


def interval_note(seed_counts: dict[str, int], ci: float, method: str) -> list[str]:
    """Report lines: what the brackets are and, with fewer than MIN_SEEDS seeds for some arm, that they are rough."""
    pct = f"{ci * 100:g}%"
    how = ("mean +- t(n-1) * sd / sqrt(n), the t-distribution's quantile from scipy" if method == "t"
           else "scipy.stats.bootstrap with method='BCa'")
    lines = [f"- Brackets: {pct} {METHODS[method]} over seeds ({how}). A t-interval of a rate can reach past 0 or 1."
             if method == "t" else f"- Brackets: {pct} {METHODS[method]} over seeds ({how})."]
    few = {name: n for name, n in seed_counts.items() if n < MIN_SEEDS}
    if few:
        lines.append(f"- **Fewer than {MIN_SEEDS} seeds** (" + ", ".join(f"{k}: {n}" for k, n in few.items())
                     + "): intervals this small a sample gives are rough; " + (
                         "the t-interval assumes roughly normal seed results, which so few seeds cannot check."
                         if method == "t" else "a bootstrap of so few values has few distinct resamples and "
                         "understates the spread."))
    return lines
