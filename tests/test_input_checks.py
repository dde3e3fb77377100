"""Bad values and inputs that used to pass silently: out-of-range temperatures and thresholds in the
files a reward model loads, goal ids and frames in the Python API and `vlmr score`, and checkpoints
that do not fit their architecture."""

import json
import math

import numpy as np
import pytest
import torch
from model_fixtures import GOALS, tiny_reward_model  # noqa: F401
from vlmr.finetune.reward_model import RewardModel, make_spec

from vlmr.core.calibration_file import read_calibration, write_calibration
from vlmr.core.errors import VlmrError

BAD_VALUES = [("temperature", math.nan, "temperature nan must be finite and > 0"),
              ("temperature", math.inf, "temperature inf must be finite and > 0"),
              ("temperature", 0.0, "temperature 0.0 must be finite and > 0"),
              ("threshold", math.nan, r"threshold nan must be in \[0, 1\]"),
              ("threshold", -0.5, r"threshold -0.5 must be in \[0, 1\]"),
              ("threshold", 1.5, r"threshold 1.5 must be in \[0, 1\]"),
              ("threshold", "0.5", "threshold '0.5' is not a number")]


def frames(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved_model(tiny_reward_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("rm") / "rm"
    tiny_reward_model.save(path)
    return path


# ------------------------------------------------------------------------------------------ range checks
@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_calibration_values_out_of_range_are_refused_naming_goal_and_field(saved_model, tmp_path, key, value,
                                                                           message):
    """json reads NaN and Infinity; a hand edit keeps the model id, so only the range check catches these."""
    rm = RewardModel.load(saved_model)
    entries = {g: {"temperature": 0.01, "threshold": 0.5} for g in GOALS}
    entries[GOALS[1]][key] = value
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    assert ("NaN" in (tmp_path / "cal.json").read_text()) == (value != value)
    with pytest.raises(VlmrError, match=rf"cal.json: goal '{GOALS[1]}': {message}; restore the file or refit"):
        RewardModel.load(saved_model, calibration=tmp_path / "cal.json")
    with pytest.raises(VlmrError, match=message):
        read_calibration(tmp_path / "cal.json")  # the pipeline's own check reads it this way
    entries[GOALS[1]][key] = 0.01 if key == "temperature" else 1.0  # edges that are fine
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    RewardModel.load(saved_model, calibration=tmp_path / "cal.json")


@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_reward_model_json_defaults_out_of_range_are_refused(saved_model, tmp_path, key, value, message):
    import shutil

    from vlmr.finetune.reward_model import reward_model_id

    path = tmp_path / "rm"
    shutil.copytree(saved_model, path)
    spec = json.loads((path / "reward_model.json").read_text())
    (path / "reward_model.json").write_text(json.dumps({**spec, key: value}))
    for load in (RewardModel.load, reward_model_id):
        with pytest.raises(VlmrError, match=rf"reward_model.json: {message} \(the default for every goal"):
            load(path)
    if not isinstance(value, str):  # the Python API, through the spec itself (pydantic reads "0.5" as 0.5)
        with pytest.raises(VlmrError, match=f"key '{key}'"):
            make_spec(arch="vlmr-tiny", goals=GOALS, **{key: value})


def test_set_calibration_refuses_values_out_of_range(tiny_reward_model):
    rm = tiny_reward_model
    before = rm.temperatures.clone(), rm.thresholds.clone()
    with pytest.raises(VlmrError, match=f"goal '{GOALS[2]}': temperature nan must be finite"):
        rm.set_calibration([0.01, 0.01, float("nan")], [0.5] * 3)
    with pytest.raises(VlmrError, match=r"every goal\)': threshold -1.0 must be in \[0, 1\]"):
        rm.set_calibration([0.01] * 3, -1.0)
    with pytest.raises(VlmrError, match="got 2 threshold values for 3 goals"):
        rm.set_calibration([0.01] * 3, [0.5] * 2)
    assert torch.equal(rm.temperatures, before[0]) and torch.equal(rm.thresholds, before[1])
