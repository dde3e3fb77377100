"""The temperature and threshold for goals outside the goal set, fitted on goals the model never trained on.

    entry = fit_new_goals(sims, labels, num_saved, num_goals, held, criterion)   # calibration.json fit.new_goal

A goal added at load is scored against the saved candidates plus itself (reward_math.mixed_goal_log_probs).
The saved goals were trained on, so their probabilities run far higher than a new goal's: on the
babyai_open_vocab chain the median P of a held-out goal's positive frame is 0.20 against 0.96 for a seen
goal's, and the seen goals' pooled threshold (fit.shared) never fires on a held-out frame. When the data
holds goals that were held out of fine-tuning, their frames of the fitting split are the only evidence of
how a new goal scores, so calibration fits one pooled temperature and threshold on them (every (frame,
held-out goal) pair, each goal's softmax over the saved candidates plus itself) and every new goal gets it.
When the held-out goals span task families ("go to", "pick up"), each family with enough of them gets a
fit of its own (`families`), which a new goal of that family gets instead.

Cross-fitting keeps a held-out goal from being judged by a fit on its own frames: the held-out goals are
split into two halves (alternately, in goal-set order) and each half also gets the fit of the other half
(`cross_fit`). Those goals are then scored, in evaluation and in the agents' reward, as a goal never seen
by the fit; a user's new goal gets the fit on all of them. None of this makes a new goal `calibrated`.

Tests: `.venv/bin/python -m pytest tests/test_new_goal_fit.py -q`
"""

from __future__ import annotations

import torch
from vlmr.calibrate.fitting import ThresholdCriterion, fit_pooled
from vlmr.finetune.new_goals import goal_family


def new_goal_pairs(sims: torch.Tensor, labels: torch.Tensor, num_saved: int, num_goals: int,
                   columns: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (frame, added goal) pair as one row: (rows, 1 + num_saved) sims with the added goal's column first,
    then the saved candidates it competes with; (rows, 1) labels.

    sims: (N, num_saved + H), the added goals' columns after the saved candidates; labels: (N, num_goals + H),
    the saved goals' labels then the added goals'. columns: indices 0..H-1 of the added goals to stack."""
    rows = [torch.cat([sims[:, num_saved + j:num_saved + j + 1], sims[:, :num_saved]], dim=1) for j in columns]
    return torch.cat(rows), torch.cat([labels[:, num_goals + j] for j in columns]).unsqueeze(1)


def _fit_group(sims, labels, num_saved: int, num_goals: int, held: list[str], members: list[int],
               criterion: ThresholdCriterion, tau_min: float, tau_max: float, min_positives: int,
               what: str) -> tuple[dict | None, str | None]:
    """The pooled fit over held-out goals `members` (indices into held) and its cross-fit by halves; or (None, why)."""
    if len(members) < 2:
        return None, f"{what}: {len(members)} held-out goal(s), and cross-fitting needs at least 2"
    halves = [members[0::2], members[1::2]]
    positives = [int(labels[:, [num_goals + j for j in half]].sum()) for half in halves]
    if min(positives) < min_positives:
        return None, (f"{what}: its halves have {positives[0]} and {positives[1]} positives in the fitting split, "
                      f"fewer than min_positives {min_positives}")
    how = f"pooled fit over the fitting split's frames of {len(members)} goals held out of fine-tuning ({what})"
    entry, _ = fit_pooled(*new_goal_pairs(sims, labels, num_saved, num_goals, members), criterion, tau_min, tau_max,
                          how)
    entry.update(goals=[held[j] for j in members], positives=sum(positives), cross_fit=[])
    for half, other in ((halves[0], halves[1]), (halves[1], halves[0])):
        fit, _ = fit_pooled(*new_goal_pairs(sims, labels, num_saved, num_goals, other), criterion, tau_min, tau_max,
                            "pooled fit over the other half of the held-out goals")
        entry["cross_fit"].append({"goals": [held[j] for j in half], "fitted_on": [held[j] for j in other],
                                   "temperature": fit["temperature"], "threshold": fit["threshold"],
                                   "target_met": fit["target_met"], "guaranteed": fit["guaranteed"]})
    return entry, None


def fit_new_goals(sims, labels, num_saved: int, num_goals: int, held: list[str], criterion: ThresholdCriterion,
                  tau_min: float = 1e-3, tau_max: float = 10.0, min_positives: int = 10) -> tuple[dict | None, str]:
    """calibration.json's `fit.new_goal` entry (or None) and a line saying what was fitted or why not.

    When the held-out goals span task families (goal_family), each family with enough of them also gets a
    fit of its own (`families`): a family's frames show its goal their own way (an object faced, an object
    carried), so its probabilities run on their own scale. A new goal of such a family gets its family's fit."""
    sims, labels = torch.as_tensor(sims).float(), torch.as_tensor(labels).long()
    args = (sims, labels, num_saved, num_goals, held)
    rest = (criterion, tau_min, tau_max, min_positives)
    entry, why = _fit_group(*args, list(range(len(held))), *rest, "all families")
    if entry is None:
        return None, f"no fit for new goals ({why}); new goals get the pooled fit of the saved goals"
    families: dict[str, list[int]] = {}
    for j, g in enumerate(held):
        families.setdefault(goal_family(g), []).append(j)
    notes = []
    if len(families) > 1:
        entry["families"] = {}
        for fam, members in families.items():
            if fam is None:
                continue
            sub, why = _fit_group(*args, members, *rest, f"family {fam!r}")
            if sub is None:
                notes.append(f"{why}: its new goals get the fit over all families")
            else:
                entry["families"][fam] = sub
                notes.append(f"family {fam!r}: temperature {sub['temperature']:.4g}, threshold {sub['threshold']:.4g}")
    return entry, (f"new goals get a pooled fit over the fitting split's frames of {len(held)} goals held out of "
                   f"fine-tuning (temperature {entry['temperature']:.4g}, threshold {entry['threshold']:.4g}"
                   f"{'; per family: ' + '; '.join(notes) if notes else ''}); each held-out goal gets the fit "
                   "on the other half of them")
