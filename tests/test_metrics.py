"""vlmr.core.metrics: the one implementation of the reward metrics, and its convention that undefined is None."""

import json

import pytest
import torch

from vlmr.core.metrics import (
    binary_metrics,
    count_metrics,
    macro_average,
    pooled_count_metrics,
    ranking_metrics,
)
from vlmr.core.reporting import fmt, fmt_ci


def auroc(probs, labels):
    """Mann-Whitney AUROC by hand: P(score of a positive > score of a negative), ties count half."""
    pos, neg = probs[labels == 1], probs[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_binary_metrics_match_hand_computation():
    probs = torch.tensor([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.6, 0.1])
    labels = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0])
    m = binary_metrics(probs, labels, probs >= 0.5)
    # predicted 0.9 0.8 0.7 0.6: tp 3 (0.9 0.8 0.6), fp 1 (0.7); missed 0.4
    assert (m["tp"], m["fp"], m["fn"], m["tn"], m["positives"], m["negatives"]) == (3, 1, 1, 3, 4, 4)
    assert (m["precision"], m["recall"], m["f1"]) == (0.75, 0.75, 0.75)
    assert m["auroc"] == pytest.approx(auroc(probs.numpy(), labels.numpy())) == pytest.approx(14 / 16)
    # AP = mean precision at each positive in score order: 1, 1, 3/4 (0.6 after 0.7), 4/5 (0.4)
    assert m["ap"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 5) / 4, abs=1e-6)
    assert m["notes"] == []


def test_ece_is_the_weighted_gap_between_confidence_and_frequency():
    # one bin holds 0.9 x4 (3 positives: frequency 0.75), another 0.1 x4 (0 positives): |0.9-0.75|/2 + |0.1-0|/2
    probs = torch.tensor([0.9] * 4 + [0.1] * 4)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    assert binary_metrics(probs, labels, probs >= 0.5)["ece"] == pytest.approx(0.125, abs=1e-6)


def test_undefined_values_are_none_with_a_note_never_0_or_1():
    probs = torch.tensor([0.9, 0.1, 0.6])
    silent = binary_metrics(probs, torch.tensor([1, 0, 1]), torch.zeros(3, dtype=torch.bool))
    assert silent["precision"] is None and silent["recall"] == 0.0 and silent["f1"] == 0.0
    assert any("no predicted positives" in n for n in silent["notes"])
    none_pos = binary_metrics(probs, torch.zeros(3, dtype=torch.long), probs >= 0.5)
    assert none_pos["auroc"] is None and none_pos["recall"] is None and none_pos["ap"] is None
    assert none_pos["f1"] is None and none_pos["fp"] == 2 and none_pos["precision"] == 0.0
    assert any("no positives" in n for n in none_pos["notes"])
    all_pos = binary_metrics(probs, torch.ones(3, dtype=torch.long), probs >= 0.5)
    assert all_pos["auroc"] is None and all_pos["recall"] == pytest.approx(2 / 3)
    assert any("no negatives" in n for n in all_pos["notes"])
    empty = binary_metrics(torch.zeros(0), torch.zeros(0), torch.zeros(0))
    assert empty["positives"] == 0 and empty["precision"] is None and empty["notes"] == ["no samples"]
    # undefined survives JSON as null
    assert json.loads(json.dumps(silent))["precision"] is None


def test_ranking_metrics_need_both_classes_for_auroc():
    probs = torch.tensor([0.2, 0.7, 0.4])
    both = ranking_metrics(probs, torch.tensor([0, 1, 1]))
    assert both["auroc"] == 1.0 and both["ap"] == 1.0
    only_pos = ranking_metrics(probs, torch.ones(3))
    assert only_pos["auroc"] is None and only_pos["ap"] == 1.0
    assert ranking_metrics(probs, torch.zeros(3)) == {"auroc": None, "ap": None}


def test_count_metrics_and_pooling_sum_counts():
    r = count_metrics([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    nothing = count_metrics([0, 0], [1, 0])
    assert nothing["precision"] is None and nothing["recall"] == 0.0  # nothing predicted: undefined, not 0 or 1
    pooled = pooled_count_metrics([count_metrics([1], [1]), count_metrics([1, 1, 1], [0, 0, 0])])
    assert pooled["precision"] == pytest.approx(0.25)  # counts pooled, not the mean of 1.0 and 0.0
    assert pooled_count_metrics([nothing, nothing])["precision"] is None


def test_macro_average_skips_undefined_values_and_counts_terms():
    out = macro_average([{"precision": 1.0, "auroc": None}, {"precision": 0.5, "auroc": 0.8}, None])
    assert out["precision"] == 0.75 and out["auroc"] == 0.8 and out["recall"] is None
    assert out["goals"]["precision"] == 2 and out["goals"]["auroc"] == 1 and out["goals"]["recall"] == 0
    assert macro_average([{"x": 0.2}, {"x": 0.4}], keys=("x",)) == {"x": 0.3, "goals": {"x": 2}}


def test_reports_write_undefined_as_n_a():
    assert fmt(None) == fmt(float("nan")) == fmt(float("inf")) == "n/a"
    assert fmt(0.91234) == "0.912" and fmt(0.0) == "0.000"
    assert fmt_ci({"mean": 0.5, "lo": 0.4, "hi": 0.6}) == "0.50 [0.40, 0.60]"
    assert fmt_ci({"mean": 0.5, "lo": None, "hi": None}) == "0.50" and fmt_ci(None) == "n/a"
