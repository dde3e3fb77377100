"""Reward-quality metrics with torchmetrics, per goal, pooled and own-goal.

    m = evaluate_scores(sims, labels, own_goal, temperatures, thresholds, goals)
    m["own_goal"]["precision"], m["macro"]["own_goal"]["f1"], m["per_goal"]["a red circle"]["all"]["auroc"]

Views (docs/DESIGN.md):
- per goal "all": every frame, scored for that goal (one column of the label matrix);
- per goal "own": only the frames whose episode mission is that goal;
- pooled: every (frame, goal) pair, each at its own goal's temperature and threshold;
- own-goal: each frame scored only for its own mission (own_goal >= 0) - the headline, what RL sees;
- macro: the mean over goals of the per-goal figures ("all" for pooled, "own" for own-goal).

A view with one class has no AUROC (null, with a note saying why); recall and F1
need a positive; AP needs a positive.

Tests: `.venv/bin/python -m pytest tests/test_calibrate_metrics.py -q`
"""

from __future__ import annotations

import numpy as np
import torch
from vlmr.calibrate.fitting import goal_probs

METRICS = ("precision", "recall", "f1", "auroc", "ap", "ece")
BEFORE_AFTER = ("auroc", "ap", "ece")  # reported for both the model's defaults and the fitted calibration


def _r(x) -> float | None:
    return None if x is None else round(float(x), 6)


def binary_metrics(probs: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, n_bins: int = 15) -> dict:
    """Metrics of one set of decisions: probs (M,) in [0, 1], labels (M,) 0/1, preds (M,) the binary rewards."""
    from torchmetrics.classification import (
        BinaryAUROC,
        BinaryAveragePrecision,
        BinaryCalibrationError,
        BinaryF1Score,
        BinaryPrecision,
        BinaryRecall,
        BinaryStatScores,
    )

    probs, labels, preds = probs.float().reshape(-1), labels.long().reshape(-1), preds.float().reshape(-1)
    if probs.numel() == 0:
        return {"positives": 0, "negatives": 0, "notes": ["no samples"], **dict.fromkeys(METRICS)}
    pos = int(labels.sum())
    neg = int(labels.numel() - pos)
    # preds are already 0/1 decisions (per-pair thresholds), so torchmetrics' 0.5 threshold keeps them as they are
    tp, fp, tn, fn, _ = (int(v) for v in BinaryStatScores()(preds, labels))
    notes = []
    out = {"positives": pos, "negatives": neg, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
           "precision": _r(BinaryPrecision()(preds, labels)),
           "recall": None, "f1": None, "auroc": None, "ap": None,
           "ece": _r(BinaryCalibrationError(n_bins=n_bins, norm="l1")(probs, labels))}
    if tp + fp == 0:
        notes.append("no predicted positives: precision reported as 0 (torchmetrics' zero_division)")
    if pos:
        out["recall"] = _r(BinaryRecall()(preds, labels))
        out["f1"] = _r(BinaryF1Score()(preds, labels))
        out["ap"] = _r(BinaryAveragePrecision(thresholds=None)(probs, labels))
    else:
        notes.append("no positives: recall, F1, AP and AUROC are undefined")
    if pos and neg:
        out["auroc"] = _r(BinaryAUROC(thresholds=None)(probs, labels))
    elif pos:
        notes.append("no negatives: AUROC is undefined")
    out["notes"] = notes
    return out


def macro_average(entries: list[dict | None]) -> dict:
    """Mean over goals of each metric, skipping goals where it is undefined; `goals` counts each metric's terms."""
    out: dict = {}
    counts = {}
    for key in METRICS + tuple(f"{k}_before" for k in BEFORE_AFTER):
        values = [e[key] for e in entries if e is not None and e.get(key) is not None]
        if key.endswith("_before") and not values:
            continue
        out[key] = _r(np.mean(values)) if values else None
        counts[key] = len(values)
    out["goals"] = counts
    return out


def evaluate_scores(sims, labels, own_goal, temperatures, thresholds, goals: list[str], n_bins: int = 15) -> dict:
    """Every view of the reward quality for one (temperatures, thresholds) setting. sims (N, C), labels (N, G)."""
    sims = torch.as_tensor(sims).float()
    labels = torch.as_tensor(labels).long()
    own_goal = torch.as_tensor(own_goal).long()
    temps = torch.as_tensor(temperatures, dtype=torch.float32)
    thr = torch.as_tensor(thresholds, dtype=torch.float32)
    probs = goal_probs(sims, temps)  # (N, G)
    preds = probs >= thr  # the binary reward of every pair
    per_goal = {}
    for g, goal in enumerate(goals):
        mine = own_goal == g
        per_goal[goal] = {
            "all": binary_metrics(probs[:, g], labels[:, g], preds[:, g], n_bins),
            "own": binary_metrics(probs[mine, g], labels[mine, g], preds[mine, g], n_bins) if bool(mine.any()) else None,
        }
    has_own = own_goal >= 0
    notes = []
    if bool(has_own.any()):
        rows = torch.nonzero(has_own).squeeze(-1)
        cols = own_goal[rows]
        own = binary_metrics(probs[rows, cols], labels[rows, cols], preds[rows, cols], n_bins)
    else:
        own = None
        notes.append("no frame has a mission in the goal set (own_goal = -1 everywhere): own-goal metrics are null")
    return {
        "frames": int(labels.shape[0]),
        "pooled": binary_metrics(probs, labels, preds, n_bins),
        "own_goal": own,
        "per_goal": per_goal,
        "macro": {"pooled": macro_average([v["all"] for v in per_goal.values()]),
                  "own_goal": macro_average([v["own"] for v in per_goal.values()]) if own is not None else None},
        "notes": notes,
    }


def add_before(after: dict, before: dict) -> dict:
    """Copy AUROC/AP/ECE of the uncalibrated setting into `after` as *_before keys, view by view."""
    def merge(a, b):
        if a is not None and b is not None:
            for k in BEFORE_AFTER:
                a[f"{k}_before"] = b[k]

    merge(after["pooled"], before["pooled"])
    merge(after["own_goal"], before["own_goal"])
    for goal, views in after["per_goal"].items():
        merge(views["all"], before["per_goal"][goal]["all"])
        merge(views["own"], before["per_goal"][goal]["own"])
    after["macro"] = {"pooled": macro_average([v["all"] for v in after["per_goal"].values()]),
                      "own_goal": macro_average([v["own"] for v in after["per_goal"].values()])
                      if after["own_goal"] is not None else None}
    return after
