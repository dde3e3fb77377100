"""Thresholds fitted on each goal's own episodes' frames (calibrate's `threshold_frames: own_goal`)."""

import json
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.fit import CalibrateConfig, calibrate
from vlmr.calibrate.fitting import CalibrationWarning, ThresholdCriterion, fit_calibration, goal_probs
from vlmr.finetune.reward_model import RewardModel

from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError

CRIT = ThresholdCriterion("precision_at", target_precision=0.95, confidence=0.9)


def episodes(seed: int, n_own: int = 800, n_other: int = 8000, confusers: float = 0.05, rare_goal_1: bool = False):
    """Two goals and one negative caption. Goal 0's own episodes separate cleanly, but 5% of the (ten times
    more) frames of goal 1's episodes score as high for goal 0 without reaching it: an object that looks like
    goal 0's, which an agent told to reach goal 0 is never paid for. Returns sims (N, 3), labels (N, 2), own (N,)."""
    rng = np.random.default_rng(seed)
    own = np.r_[np.zeros(n_own, int), np.ones(n_other, int)]
    labels = np.zeros((len(own), 2), int)
    labels[:n_own, 0] = rng.random(n_own) < 0.25
    labels[n_own:, 1] = rng.random(n_other) < (0.002 if rare_goal_1 else 0.25)
    sims = rng.normal(0.0, 0.05, (len(own), 3))
    sims[:, 0] += labels[:, 0]
    sims[n_own:, 0] += rng.random(n_other) < confusers  # goal 0's look-alikes in goal 1's episodes
    sims[:, 1] += labels[:, 1]
    return torch.tensor(sims, dtype=torch.float32), torch.tensor(labels), torch.tensor(own)


def quiet_fit(sims, labels, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return fit_calibration(sims, labels, CRIT, **kw)


def test_own_goal_frames_guarantee_what_all_frames_cannot():
    sims, labels, own = episodes(0)
    every = quiet_fit(sims, labels)
    mine = quiet_fit(sims, labels, own_goal=own)
    # on all frames, 400 look-alikes swamp goal 0's 200 positives: no bound reaches 0.95
    assert every.threshold_frames == "all" and every.goals[0]["guaranteed"] is False
    assert every.goals[0]["positives"] == int(labels[:, 0].sum())
    # on its own episodes the same scores separate, and the threshold is guaranteed
    assert mine.threshold_frames == "own_goal" and mine.goals[0]["guaranteed"] is True
    assert mine.goals[0]["positives"] == int(labels[own == 0, 0].sum())
    assert mine.goals[0]["negatives"] == int((own == 0).sum()) - mine.goals[0]["positives"]
    assert mine.goals[1]["guaranteed"] is True and every.goals[1]["guaranteed"] is True
    # temperatures fit every frame either way
    assert mine.temperatures == every.temperatures
    # on fresh episodes the own-goal threshold holds where the reward is paid
    sims2, labels2, own2 = episodes(1)
    probs = goal_probs(sims2, torch.tensor(mine.temperatures))
    for g in range(2):
        rows = own2 == g
        fired = probs[rows, g] >= mine.thresholds[g]
        assert int(fired.sum()) > 50 and float(labels2[rows, g][fired].float().mean()) >= 0.95


def test_fallback_counts_own_goal_positives():
    sims, labels, own = episodes(2, n_own=4000, n_other=4000, rare_goal_1=True)
    labels[:4000, 1] = torch.from_numpy(np.random.default_rng(3).random(4000) < 0.2)  # goal 1 reached in goal 0's
    mine = quiet_fit(sims, labels, own_goal=own, min_positives=30)
    every = quiet_fit(sims, labels, min_positives=30)
    assert int(labels[own == 1, 1].sum()) < 30 <= int(labels[:, 1].sum())
    assert mine.goals[1]["fallback"] and "own episodes' frames" in mine.goals[1]["fallback_reason"]
    assert not every.goals[1]["fallback"]
    assert "own-goal" in mine.shared["how"]


def test_frames_without_missions_are_refused():
    sims, labels, own = episodes(0)
    with pytest.raises(ValueError, match="no frame has a mission"):
        quiet_fit(sims, labels, own_goal=torch.full_like(own, -1))
    with pytest.raises(ValueError, match="own_goal has 3 frames"):
        quiet_fit(sims, labels, own_goal=own[:3])


def test_stage_records_the_frames_and_fits_on_own_episodes(babyai_dataset, shapes_dataset, tmp_path):
    goals = read_manifest(babyai_dataset)["goals"]
    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", goals, negatives=["a grey wall"])
    rm.save(tmp_path / "rm")
    base = {"reward_model": str(tmp_path / "rm"), "data": str(babyai_dataset), "min_positives": 1, "logger": "none",
            "plots": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calibrate(CalibrateConfig(**base, threshold_frames="own_goal"), progress=False)
    cal = json.loads((tmp_path / "rm" / "calibration.json").read_text())
    assert cal["fit"]["threshold_frames"] == "own_goal"
    val = load_split_arrays(babyai_dataset, "val", goals)
    for g, goal in enumerate(goals):
        assert cal["goals"][goal]["fit"]["positives"] == int(val.labels[val.own_goal == g, g].sum())
    assert "own episodes' frames only" in (tmp_path / "rm" / "calibration" / "report.md").read_text()
    with pytest.raises(ValueError, match="threshold_frames"):
        CalibrateConfig(**base, threshold_frames="mine")
    shapes_goals = read_manifest(shapes_dataset)["goals"]
    RewardModel.create("vlmr-tiny", shapes_goals).save(tmp_path / "shapes_rm")
    with pytest.raises(VlmrError, match="no frame of split 'val'.*has a mission.*set threshold_frames=all"):
        calibrate(CalibrateConfig(**base | {"reward_model": str(tmp_path / "shapes_rm"), "data": str(shapes_dataset)},
                                  threshold_frames="own_goal"), progress=False)
