"""Views of reward quality: per goal, pooled and own-goal; every number comes from vlmr.core.metrics.

    m = evaluate_scores(sims, labels, own_goal, temperatures, thresholds, goals)
    m["own_goal"]["precision"], m["macro"]["own_goal"]["f1"], m["per_goal"]["a red circle"]["all"]["auroc"]

Views (docs/DESIGN.md):
- per goal "all": every frame, scored for that goal (one column of the label matrix);
- per goal "own": only the frames whose episode mission is that goal;
- pooled: every (frame, goal) pair, each at its own goal's temperature and threshold;
- own-goal: each frame scored only for its own mission (own_goal >= 0) - the headline, what RL sees;
- macro: the mean over goals of the per-goal figures ("all" for pooled, "own" for own-goal).

Undefined values follow vlmr.core.metrics: null with a note (a view with one class has no
AUROC; recall, F1 and AP need a positive; precision needs a predicted positive).

Tests: `.venv/bin/python -m pytest tests/test_calibrate_metrics.py -q`
"""

from __future__ import annotations

import torch
from vlmr.calibrate.fitting import goal_probs
from vlmr.finetune.new_goals import goal_family

from vlmr.core.metrics import METRICS, binary_metrics, macro_average

BEFORE_AFTER = ("auroc", "ap", "ece")  # reported for both the model's defaults and the fitted calibration
BEFORE_KEYS = tuple(f"{k}_before" for k in BEFORE_AFTER)


def _macro(entries: list[dict | None]) -> dict:
    """macro_average over METRICS, plus the *_before keys once add_before has put them in."""
    before = any(e is not None and BEFORE_KEYS[0] in e for e in entries)
    return macro_average(entries, METRICS + (BEFORE_KEYS if before else ()))


def evaluate_scores(sims, labels, own_goal, temperatures, thresholds, goals: list[str], n_bins: int = 15,
                    num_saved: int | None = None) -> dict:
    """Every view of the reward quality for one (temperatures, thresholds) setting. sims (N, C), labels (N, G).

    num_saved: the last goals were added at load (their columns follow the num_saved saved candidates)."""
    sims = torch.as_tensor(sims).float()
    labels = torch.as_tensor(labels).long()
    own_goal = torch.as_tensor(own_goal).long()
    temps = torch.as_tensor(temperatures, dtype=torch.float32)
    thr = torch.as_tensor(thresholds, dtype=torch.float32)
    probs = goal_probs(sims, temps, num_saved)  # (N, G)
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
        "macro": {"pooled": _macro([v["all"] for v in per_goal.values()]),
                  "own_goal": _macro([v["own"] for v in per_goal.values()]) if own is not None else None},
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
    after["macro"] = {"pooled": _macro([v["all"] for v in after["per_goal"].values()]),
                      "own_goal": _macro([v["own"] for v in after["per_goal"].values()])
                      if after["own_goal"] is not None else None}
    return after


def goal_groups(goals: list[str], holdout: list[str] | None) -> dict[str, list[str]]:
    """Named subsets of the goal set for the report: seen and held-out goals, and each task family's share of
    them ("go to", "pick up held out", ...). A family is the words before " the " ("go to the red ball"); goals
    without it (Crafter's "collect wood") form no family. Only groups that exist and split the set are returned."""
    held = set(holdout or ())
    status = {g: "held out" if g in held else "seen" for g in goals}
    groups: dict[str, list[str]] = {}
    if held:
        for name in ("seen", "held out"):
            groups[name] = [g for g in goals if status[g] == name]
    families = {g: goal_family(g) for g in goals if goal_family(g) is not None}
    if len(set(families.values())) > 1:
        for fam in dict.fromkeys(families.values()):
            for name in (("seen", "held out") if held else ("",)):
                members = [g for g in goals if families.get(g) == fam and (not name or status[g] == name)]
                if members:
                    groups[f"{fam} {name}".strip()] = members
    return {k: v for k, v in groups.items() if v}


def group_macros(per_goal: dict, groups: dict[str, list[str]]) -> dict:
    """Per group: the macro means over its goals (own-goal and pooled views), and how many goals it has."""
    return {name: {"goals": len(members),
                   "own_goal": _macro([(per_goal.get(g) or {}).get("own") for g in members]),
                   "pooled": _macro([(per_goal.get(g) or {}).get("all") for g in members])}
            for name, members in groups.items()}
