"""Strict mode: one switch, the same meaning in every stage (docs/DESIGN.md, 'Strict mode')."""

import dataclasses
import warnings

import pytest
from vlmr.calibrate.fit import CalibrateConfig
from vlmr.calibrate.fitting import CalibrationWarning, ThresholdCriterion, fit_calibration
from vlmr.finetune.train import FinetuneConfig
from vlmr.rl.agent.ppo import PPOConfig
from vlmr.rl.collect.collect import CollectConfig
from vlmr.rl.experiments.compare import CompareConfig
from vlmr.rl.experiments.pipeline import PipelineConfig

from vlmr.core.config import stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.quality import QualityWarning, StrictModeError, quality_issue


def test_quality_issue_warns_or_raises():
    with pytest.warns(QualityWarning, match="too few"):
        quality_issue("too few frames", strict=False)
    with pytest.raises(StrictModeError, match="too few frames.*strict mode") as err:
        quality_issue("too few frames", strict=True)
    assert isinstance(err.value, VlmrError) and issubclass(CalibrationWarning, QualityWarning)


@pytest.mark.parametrize("cls", [CollectConfig, FinetuneConfig, CalibrateConfig, PPOConfig, CompareConfig,
                                 PipelineConfig])
def test_every_stage_config_has_strict_off_by_default(cls):
    field = {f.name: f for f in dataclasses.fields(cls)}["strict"]
    assert field.default is False


def test_strict_flag_sets_the_config_key(tmp_path):
    seen = []
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("reward_model: m\ndata: d\n")
    stage_main(["--strict", str(cfg_file)], CalibrateConfig, seen.append, "vlmr calibrate", "")
    stage_main([str(cfg_file)], CalibrateConfig, seen.append, "vlmr calibrate", "")
    assert [c.strict for c in seen] == [True, False]


def test_calibration_fallback_is_an_error_under_strict():
    import torch

    sims = torch.randn(40, 2)
    labels = torch.zeros(40, 2, dtype=torch.long)
    labels[:20, 0] = 1
    labels[20:23, 1] = 1  # 3 positives < min_positives: the pooled fallback
    crit = ThresholdCriterion("precision_at", 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        fit = fit_calibration(sims, labels, crit, min_positives=10)
    assert fit.goals[1]["fallback"]
    with pytest.raises(StrictModeError, match="fallback"):
        fit_calibration(sims, labels, crit, min_positives=10, strict=True)


def test_binary_reward_with_unguaranteed_goals_warns_at_load_and_strict_refuses(tmp_path):
    import torch
    from model_fixtures import GOALS
    from vlmr.finetune.reward_model import RewardModel

    from vlmr.core.calibration_file import write_calibration

    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", GOALS, negatives=["an empty room"])
    rm.save(tmp_path / "rm")
    entries = {g: {"temperature": 0.05, "threshold": 0.5, "guaranteed": i != 1} for i, g in enumerate(GOALS)}
    write_calibration(tmp_path / "cal.json", rm.model_id, entries,
                      criterion={"name": "precision_at", "target_precision": 0.95, "confidence": 0.9})
    with pytest.warns(QualityWarning, match=r"1 of 3 goals have no threshold with a guaranteed precision.*blue key"):
        RewardModel.load(tmp_path / "rm", calibration=tmp_path / "cal.json")
    with pytest.raises(StrictModeError, match="blue key"):
        RewardModel.load(tmp_path / "rm", calibration=tmp_path / "cal.json", strict=True)
    entries[GOALS[1]]["guaranteed"] = True
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QualityWarning)
        RewardModel.load(tmp_path / "rm", calibration=tmp_path / "cal.json", strict=True)
