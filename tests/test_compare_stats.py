"""vlmr.rl.experiments.stats: intervals over seeds, paired and unpaired differences, rank correlation, AUC, JSON
NaNs (precision/recall: test_metrics.py). Expected values are worked by hand; t-quantiles from a printed table."""

import json
import math

import numpy as np
import pytest
from vlmr.rl.experiments.compare_summary import contrast, interval_note
from vlmr.rl.experiments.stats import (
    bca_interval,
    interval_band,
    mean_interval,
    nan_to_none,
    normalized_auc,
    paired_difference,
    rank_correlation,
    seed_record,
    t_interval,
    unpaired_difference,
)

T_975_DF1, T_975_DF2, T_95_DF2 = 12.7062, 4.3027, 2.9200  # Student t quantiles from a table (0.975 and 0.95)


def test_t_interval_matches_a_hand_computed_value():
    # [0.4, 0.2, 0.5]: mean 0.36667, sd sqrt(((1/30)^2 + (5/30)^2 + (4/30)^2) / 2) = 0.152753, sem 0.0881917
    mean, lo, hi = t_interval([0.4, 0.2, 0.5], 0.95)
    assert mean == pytest.approx(0.366667, abs=1e-6)
    assert (hi - mean) == pytest.approx(T_975_DF2 * 0.0881917, rel=1e-4)  # 0.37946
    assert (lo, hi) == pytest.approx((-0.012792, 0.746125), abs=1e-4)
    assert t_interval([0.4, 0.2, 0.5], 0.90)[2] - mean == pytest.approx(T_95_DF2 * 0.0881917, rel=1e-4)
    # undefined values are skipped, one value has no interval, none has no mean
    assert t_interval([0.4, None, 0.2, float("nan"), 0.5]) == pytest.approx((mean, lo, hi))
    one = t_interval([0.3, None])
    assert one[0] == 0.3 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in t_interval([None]))
    assert t_interval([0.55, 0.55, 0.55]) == pytest.approx((0.55, 0.55, 0.55))  # no spread in the sample: the report flags n < 5


def test_bca_interval_is_named_and_scipys():
    values = [0.1, 0.5, 0.6, 0.2, 0.9, 0.4]
    mean, lo, hi = mean_interval(values, 0.95, "bca", 2000)
    assert mean == pytest.approx(0.45) and lo < mean < hi
    assert (mean, lo, hi) == bca_interval(values, 0.95, 2000)  # seeded: the same resamples every time
    assert bca_interval([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7, 0.7))  # constant: zero width, not NaN
    with pytest.raises(ValueError, match="interval method 'percentile'"):
        mean_interval(values, 0.95, "percentile")


def test_interval_band_is_the_interval_per_column():
    mean, lo, hi = interval_band(np.array([[0.0, 1.0], [0.0, 0.5]]), 0.95, "t")
    # column 2: mean 0.75, sd 0.353553, sem 0.25
    assert mean.tolist() == [0.0, 0.75] and lo[0] == hi[0] == 0.0
    assert (lo[1], hi[1]) == pytest.approx((0.75 - T_975_DF1 * 0.25, 0.75 + T_975_DF1 * 0.25), rel=1e-4)


def test_paired_difference_matches_a_hand_computed_value():
    # per-seed differences [0.4, 0.2, 0.5] (the sample of the t-interval test); seed 4's pair has an undefined value
    mean, lo, hi, n = paired_difference([0.9, 0.8, 0.7, 0.6], [0.5, 0.6, 0.2, None], 0.95, "t")
    assert n == 3 and mean == pytest.approx(0.366667, abs=1e-6)
    assert (lo, hi) == pytest.approx((-0.012792, 0.746125), abs=1e-4)


def test_pairing_by_seed_removes_what_the_arms_share():
    # seed effects (0.5, 0.2, 0.8) shared by both arms swamp the unpaired interval; the paired one sees a constant +0.1
    a, b = [0.6, 0.3, 0.9], [0.5, 0.2, 0.8]
    mean, lo, hi, _ = paired_difference(a, b)
    assert (mean, lo, hi) == pytest.approx((0.1, 0.1, 0.1))
    u_mean, u_lo, u_hi = unpaired_difference(a, b)
    assert u_mean == pytest.approx(0.1) and u_lo < 0 < u_hi


def test_unpaired_difference_is_welchs_interval():
    # variances 0.023333 and 0.013333, se sqrt((0.023333 + 0.013333) / 3) = 0.110554, Welch df 3.7231
    from scipy import stats

    mean, lo, hi = unpaired_difference([0.4, 0.2, 0.5], [0.1, 0.1, 0.3], 0.95, "t")
    assert mean == pytest.approx(0.2)
    assert hi - mean == pytest.approx(stats.t.ppf(0.975, 3.7231) * 0.110554, rel=1e-4)
    assert unpaired_difference([0.2, 0.2], [0.1, 0.1]) == pytest.approx((0.1, 0.1, 0.1))
    one = unpaired_difference([0.0, 1.0], [0.3])
    assert one[0] == pytest.approx(0.2) and math.isnan(one[1])  # a single seed: no interval


def arm(name, seeds, finals):
    return {"name": name, "seeds": seeds, "final_success": {"values": finals}}


def test_contrast_pairs_by_the_shared_seeds_and_says_so():
    a = arm("a", [0, 1, 2, 3], [0.9, 0.8, 0.7, 0.6])
    b = arm("b", [1, 0, 2], [0.6, 0.5, 0.2])  # seed order differs, seed 3 missing: pairs are matched by seed
    d = contrast(a, b, "final_success", 0.95, "t")
    assert d["paired"] and d["seeds"] == [0, 1, 2] and d["n"] == 3
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx((0.366667, -0.012792, 0.746125), abs=1e-4)
    assert d["statistic"].startswith("paired by seed") and "t-interval" in d["statistic"]
    u = contrast(a, arm("c", [7, 8], [0.1, 0.3]), "final_success", 0.95, "t")  # no shared seed: Welch
    assert not u["paired"] and "unpaired" in u["statistic"] and u["mean"] == pytest.approx(0.55)


def test_interval_note_says_when_there_are_fewer_than_five_seeds():
    assert not any("Fewer than 5" in line for line in interval_note({"a": 5, "b": 6}, 0.95, "t"))
    note = "\n".join(interval_note({"a": 5, "b": 3}, 0.9, "t"))
    assert "90% t-interval" in note and "Fewer than 5 seeds** (b: 3)" in note
    assert "BCa bootstrap" in "\n".join(interval_note({"a": 2}, 0.95, "bca"))


def test_seed_record_round_trips_through_strict_json():
    record = seed_record([0.5, None, float("nan"), 0.7], 0.95, "t")
    assert record["values"] == [0.5, None, None, 0.7] and record["n"] == 2
    back = json.loads(json.dumps(nan_to_none(record), allow_nan=False))
    assert back["values"] == record["values"]
    assert seed_record(back["values"], 0.95, "t") == record  # the statistic is recomputable from what JSON keeps


def test_rank_correlation_skips_undefined_pairs():
    # ranks x (1, 2, 3, 4), y (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    c = rank_correlation([0.1, 0.2, 0.3, None, 0.4], [0.0, 0.5, 0.2, 1.0, 0.9])
    assert c["n"] == 4 and c["rho"] == pytest.approx(0.8)
    three = rank_correlation([1, 2, 3], [0.1, 0.5, 0.7])
    assert three["rho"] == 1.0 and three["p"] == pytest.approx(2 / 6)  # exact: 2 of 6 orderings are as extreme
    assert rank_correlation([1, 2], [3, 4])["rho"] is None  # too few points
    assert rank_correlation([1, 2, 3], [0.5, 0.5, 0.5])["rho"] is None  # nothing to rank


def test_normalized_auc():
    assert normalized_auc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert normalized_auc([0, 5, 10], [1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert normalized_auc([0, 2, 10], [0.0, 1.0, 1.0]) == pytest.approx(0.9)
    assert normalized_auc([7], [0.3]) == pytest.approx(0.3)


def test_nan_to_none():
    assert nan_to_none({"a": [1.0, float("nan")], "b": np.float32(2.0), "c": float("inf")}) == \
        {"a": [1.0, None], "b": 2.0, "c": None}
