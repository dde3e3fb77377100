"""Reward-quality metrics: the views (per goal, pooled, own-goal, macro) and one-class goals."""

import numpy as np
import pytest
import torch
from vlmr.calibrate.fitting import goal_probs
from vlmr.calibrate.metrics import add_before, binary_metrics, evaluate_scores, macro_average

GOALS = ["a red circle", "a blue square", "a green star"]


def manual(probs, labels, thr):
    pred = probs >= thr
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


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


def test_binary_metrics_match_hand_computation():
    probs = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.6, 0.1])
    labels = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0])
    m = binary_metrics(probs, labels, probs >= 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["positives"], m["negatives"]) == (3, 1, 1, 3, 4, 4)
    p, r, f1 = manual(probs.numpy(), labels.numpy(), 0.5)
    assert (m["precision"], m["recall"], m["f1"]) == (pytest.approx(p), pytest.approx(r), pytest.approx(f1))
    assert m["auroc"] == pytest.approx(auroc(probs.numpy(), labels.numpy()))
    assert 0 < m["ece"] < 1 and 0 < m["ap"] <= 1 and m["notes"] == []


def test_one_class_goal_reports_null_auroc_with_a_reason():
    probs = torch.tensor([0.9, 0.1, 0.6])
    none_pos = binary_metrics(probs, torch.zeros(3, dtype=torch.long), probs >= 0.5)
    assert none_pos["auroc"] is None and none_pos["recall"] is None and none_pos["ap"] is None
    assert none_pos["fp"] == 2 and none_pos["precision"] == 0.0
    assert any("no positives" in n for n in none_pos["notes"])
    all_pos = binary_metrics(probs, torch.ones(3, dtype=torch.long), probs >= 0.5)
    assert all_pos["auroc"] is None and all_pos["recall"] == pytest.approx(2 / 3)
    assert any("no negatives" in n for n in all_pos["notes"])
    empty = binary_metrics(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    assert empty["positives"] == 0 and empty["precision"] is None


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


def test_macro_average_skips_undefined_values():
    out = macro_average([{"precision": 1.0, "auroc": None}, {"precision": 0.5, "auroc": 0.8}, None])
    assert out["precision"] == 0.75 and out["auroc"] == 0.8 and out["recall"] is None
    assert out["goals"]["precision"] == 2 and out["goals"]["auroc"] == 1
