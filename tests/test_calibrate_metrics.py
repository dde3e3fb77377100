"""Reward-quality views (per goal, pooled, own-goal, macro, before/after); the metric maths is in test_metrics.py."""

import numpy as np
import pytest
import torch
from vlmr.calibrate.fitting import goal_probs
from vlmr.calibrate.metrics import add_before, evaluate_scores

GOALS = ["a red circle", "a blue square", "a green star"]


def manual(probs, labels, thr):
    pred = probs >= thr
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    p = tp / (tp + fp) if tp + fp else None  # nothing predicted: undefined (vlmr.core.metrics)
    r = tp / (tp + fn)
    return p, r, 2 * tp / (2 * tp + fp + fn)


def auroc(probs, labels):
    pos, neg = probs[labels == 1], probs[labels == 0]
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg)))


def scored(seed=0, n=400):
    gen = torch.Generator().manual_seed(seed)
    sims = torch.randn(n, 4, generator=gen) * 0.1
    labels = (torch.rand(n, 3, generator=gen) < 0.3).long()
    sims[:, :3] += 0.05 * labels  # some signal
    own = torch.randint(-1, 3, (n,), generator=gen)
    return sims, labels, own


def test_views_use_each_goals_own_temperature_and_threshold():
    sims, labels, own = scored()
    temps, thr = [0.02, 0.05, 0.03], [0.4, 0.3, 0.5]
    m = evaluate_scores(sims, labels, own, temps, thr, GOALS)
    probs = goal_probs(sims, torch.tensor(temps)).numpy()
    lab = labels.numpy()
    for g, goal in enumerate(GOALS):
        p, r, _ = manual(probs[:, g], lab[:, g], thr[g])
        assert m["per_goal"][goal]["all"]["precision"] == pytest.approx(p, abs=1e-6)
        assert m["per_goal"][goal]["all"]["recall"] == pytest.approx(r, abs=1e-6)
        mine = own.numpy() == g
        assert m["per_goal"][goal]["own"]["positives"] == int(lab[mine, g].sum())
    # pooled: every pair at its goal's threshold
    pred = probs >= np.array(thr)
    tp = int((pred & (lab == 1)).sum())
    assert m["pooled"]["tp"] == tp and m["pooled"]["positives"] == int(lab.sum())
    assert m["pooled"]["positives"] + m["pooled"]["negatives"] == lab.size
    # own-goal: each frame only for its mission
    rows = np.flatnonzero(own.numpy() >= 0)
    cols = own.numpy()[rows]
    own_labels = lab[rows, cols]
    assert m["own_goal"]["positives"] == int(own_labels.sum())
    assert m["own_goal"]["positives"] + m["own_goal"]["negatives"] == len(rows)
    assert m["own_goal"]["auroc"] == pytest.approx(auroc(probs[rows, cols], own_labels), abs=1e-5)
    # macro = mean of the per-goal figures
    assert m["macro"]["pooled"]["f1"] == pytest.approx(np.mean([m["per_goal"][g]["all"]["f1"] for g in GOALS]), abs=1e-6)
    assert m["macro"]["own_goal"]["auroc"] == pytest.approx(
        np.mean([m["per_goal"][g]["own"]["auroc"] for g in GOALS]), abs=1e-6)


def test_before_after_and_missing_missions():
    sims, labels, _ = scored(seed=1)
    none = torch.full((len(sims),), -1)
    labels[:, 2] = 0  # a goal with no positives in test
    after = evaluate_scores(sims, labels, none, [0.02] * 3, [0.4] * 3, GOALS)
    before = evaluate_scores(sims, labels, none, [0.01] * 3, [0.5] * 3, GOALS)
    merged = add_before(after, before)
    assert merged["own_goal"] is None and merged["macro"]["own_goal"] is None
    assert any("own-goal metrics are null" in n for n in merged["notes"])
    assert merged["pooled"]["ece_before"] == before["pooled"]["ece"]
    assert merged["per_goal"][GOALS[2]]["all"]["auroc"] is None
    assert merged["per_goal"][GOALS[2]]["all"]["auroc_before"] is None
    assert merged["macro"]["pooled"]["goals"]["auroc"] == 2 and merged["macro"]["pooled"]["goals"]["ece"] == 3


def test_a_goal_that_never_fires_has_no_precision_and_macro_skips_it():
    sims, labels, own = scored(seed=2)
    m = evaluate_scores(sims, labels, own, [0.02] * 3, [0.4, 0.3, 1.5], GOALS)  # P <= 1 < 1.5: goal 2 never fires
    silent = m["per_goal"][GOALS[2]]["all"]
    assert silent["precision"] is None and silent["tp"] + silent["fp"] == 0 and silent["recall"] == 0.0
    assert any("no predicted positives" in n for n in silent["notes"])
    fired = [m["per_goal"][g]["all"]["precision"] for g in GOALS[:2]]
    assert m["macro"]["pooled"]["precision"] == pytest.approx(np.mean(fired), abs=1e-6)
    assert m["macro"]["pooled"]["goals"]["precision"] == 2 and m["macro"]["pooled"]["goals"]["recall"] == 3
