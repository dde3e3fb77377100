"""The fit for goals outside the goal set: fitted on held-out goals, cross-fitted by halves, read at load."""

import re
import warnings

import numpy as np
import pytest
import torch
from model_fixtures import GOALS, tiny_reward_model  # noqa: F401
from vlmr.calibrate.fitting import ThresholdCriterion, fit_calibration
from vlmr.calibrate.new_goal_fit import fit_new_goals, new_goal_pairs
from vlmr.finetune.reward_model import RewardModel

from vlmr.core.calibration_file import write_calibration
from vlmr.core.quality import QualityWarning

CRITERION = ThresholdCriterion("precision_at", target_precision=0.9)


def trained_and_held_scores(n=3000, saved_goals=3, negatives=1, held=4, seed=0):
    """Similarities where saved goals score high on their positives and held-out goals score only a little
    above the saved candidates on theirs (what adaptation does to goals it never saw)."""
    rng = np.random.default_rng(seed)
    num_saved = saved_goals + negatives
    sims = rng.normal(0.20, 0.02, (n, num_saved + held))
    labels = np.zeros((n, saved_goals + held), dtype=np.int64)
    mission = rng.integers(0, saved_goals + held, n)
    reached = rng.random(n) < 0.3
    for i in np.flatnonzero(reached):
        g = mission[i]
        labels[i, g] = 1
        column = g if g < saved_goals else num_saved + g - saved_goals
        sims[i, column] += 0.20 if g < saved_goals else 0.07
    return torch.tensor(sims, dtype=torch.float32), torch.tensor(labels), num_saved, saved_goals


def test_pairs_put_the_added_goal_first_before_the_saved_candidates():
    sims = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6)  # 4 saved candidates, 2 added goals
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]])  # 3 saved goals, then the 2 added goals' labels
    rows, lab = new_goal_pairs(sims, labels, num_saved=4, num_goals=3, columns=[1, 0])
    assert rows.tolist() == [[5, 0, 1, 2, 3], [11, 6, 7, 8, 9], [4, 0, 1, 2, 3], [10, 6, 7, 8, 9]]
    assert lab.squeeze(1).tolist() == [0, 1, 1, 0]


def test_held_out_goals_get_a_fit_of_their_own_that_fires_on_them():
    sims, labels, num_saved, num_goals = trained_and_held_scores()
    held = [f"held {j}" for j in range(4)]
    saved_fit = fit_calibration(sims[:, :num_saved], labels[:, :num_goals], CRITERION)
    entry, note = fit_new_goals(sims, labels, num_saved, num_goals, held, CRITERION)
    assert entry["goals"] == held and "other half" in note
    rows, lab = new_goal_pairs(sims, labels, num_saved, num_goals, list(range(4)))
    lab = lab.squeeze(1).bool()

    def fired(fit):
        return (rows / fit["temperature"]).softmax(-1)[:, 0] >= fit["threshold"]
    # the saved goals' pooled fit barely fires on held-out positives; the fit on held-out goals does, precisely
    assert float(fired(saved_fit.shared)[lab].float().mean()) < 0.2
    assert float(fired(entry)[lab].float().mean()) > 0.5 and float(lab[fired(entry)].float().mean()) >= 0.9
    halves = entry["cross_fit"]  # alternate goals; each half carries the fit on the other half
    assert [h["goals"] for h in halves] == [["held 0", "held 2"], ["held 1", "held 3"]]
    assert [h["fitted_on"] for h in halves] == [["held 1", "held 3"], ["held 0", "held 2"]]
    only_odd, _ = fit_new_goals(sims[:, [0, 1, 2, 3, 5, 7]], labels[:, [0, 1, 2, 4, 6]], num_saved, num_goals,
                                ["held 1", "held 3"], CRITERION, min_positives=1)
    assert halves[0]["threshold"] == only_odd["threshold"]  # the fit on the odd goals alone, no even frame in it
    assert halves[0]["temperature"] == only_odd["temperature"]


def test_too_few_held_out_goals_or_positives_leave_new_goals_on_the_pooled_fit():
    sims, labels, num_saved, num_goals = trained_and_held_scores()
    entry, note = fit_new_goals(sims[:, :num_saved + 1], labels[:, :num_goals + 1], num_saved, num_goals, ["h"],
                                CRITERION)
    assert entry is None and "at least 2" in note
    entry, note = fit_new_goals(sims, labels, num_saved, num_goals, [f"h{j}" for j in range(4)], CRITERION,
                                min_positives=10 ** 6)
    assert entry is None and "fewer than min_positives" in note


@pytest.fixture
def saved_with_new_goal_fit(tiny_reward_model, tmp_path):
    tiny_reward_model.save(tmp_path / "rm")
    entries = {g: {"temperature": 0.02, "threshold": 0.5} for g in GOALS}
    new_goal = {"temperature": 0.07, "threshold": 0.2, "goals": ["go to the purple box", "go to the grey ball"],
                "cross_fit": [{"goals": ["go to the purple box"], "temperature": 0.08, "threshold": 0.25},
                              {"goals": ["go to the grey ball"], "temperature": 0.09, "threshold": 0.15}]}
    write_calibration(tmp_path / "cal.json", tiny_reward_model.model_id, entries,
                      fit={"shared": {"temperature": 0.05, "threshold": 0.9}, "new_goal": new_goal})
    return tmp_path / "rm", tmp_path / "cal.json"


def test_new_goals_read_the_new_goal_fit_and_held_out_goals_their_cross_fit(saved_with_new_goal_fit):
    rm_dir, cal = saved_with_new_goal_fit
    goals = ["go to the grey ball", "pick up the yellow key", "go to the purple box"]
    with pytest.warns(QualityWarning, match=r"fit on goals held out of fine-tuning \(fit.new_goal\).*calibrated: false"):
        rm = RewardModel.load(rm_dir, calibration=cal, goals=goals)
    assert torch.allclose(rm.temperatures[3:], torch.tensor([0.09, 0.07, 0.08]))  # cross-fit, full fit, cross-fit
    assert torch.allclose(rm.thresholds[3:], torch.tensor([0.15, 0.2, 0.25]))
    assert torch.allclose(rm.thresholds[:3], torch.tensor([0.5, 0.5, 0.5]))  # saved goals keep their own fit
    assert rm.calibrated == {**{g: True for g in GOALS}, **{g: False for g in goals}}
    assert rm.new_goal_fits == {goals[0]: "fit.new_goal.cross_fit[1]", goals[1]: "fit.new_goal",
                                goals[2]: "fit.new_goal.cross_fit[0]"}
    late = RewardModel.load(rm_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        late.load_calibration(cal)
        late.add_goals(goals)  # added after the calibration: the same values
    assert torch.equal(late.thresholds, rm.thresholds) and torch.equal(late.temperatures, rm.temperatures)
    assert late.new_goal_fits == rm.new_goal_fits


def test_score_cli_names_the_new_goal_fit(saved_with_new_goal_fit, tmp_path, capsys):
    from PIL import Image

    from vlmr.cli import main

    path = tmp_path / "f.png"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(path)
    rm_dir, cal = saved_with_new_goal_fit
    assert main(["score", "--model", str(rm_dir), "--calibration", str(cal), "--goal", "pick up the yellow key",
                 str(path)]) == 0
    assert re.search(r"\[0\]\s+no: new, new-goal fit\s+pick up the yellow key", capsys.readouterr().out)


def test_each_task_family_gets_a_fit_of_its_own_and_its_new_goals_read_it(saved_with_new_goal_fit):
    sims, labels, num_saved, num_goals = trained_and_held_scores(held=6)
    held = ["go to the red ball", "go to the blue key", "go to the grey box",
            "pick up the red ball", "pick up the blue key", "sing the song"]
    entry, note = fit_new_goals(sims, labels, num_saved, num_goals, held, CRITERION)
    assert set(entry["families"]) == {"go to", "pick up"} and "family 'pick up'" in note
    goto = entry["families"]["go to"]
    assert goto["goals"] == held[:3] and [h["goals"] for h in goto["cross_fit"]] == [held[0:3:2], held[1:2]]
    alone, _ = fit_new_goals(sims[:, :num_saved + 3], labels[:, :num_goals + 3], num_saved, num_goals, held[:3],
                             CRITERION)
    assert goto["threshold"] == alone["threshold"] and "families" not in alone  # the family's frames only
    # read back: a family's goals get its fit (their cross-fit for the held-out ones), others the fit over all
    from vlmr.finetune.new_goals import new_goal_fit

    cal = {"fit": {"shared": {"temperature": 0.5, "threshold": 0.5}, "new_goal": entry}}
    assert new_goal_fit(cal, "c.json", "go to the purple key")[:2] == (goto["temperature"], goto["threshold"])
    assert new_goal_fit(cal, "c.json", "go to the blue key")[:2] == (goto["cross_fit"][1]["temperature"],
                                                                      goto["cross_fit"][1]["threshold"])
    assert new_goal_fit(cal, "c.json", "open the red door")[:2] == (entry["temperature"], entry["threshold"])
    assert new_goal_fit(cal, "c.json", "sing the song")[2].startswith("fit.new_goal.cross_fit")
