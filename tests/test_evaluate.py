"""`vlmr evaluate`: several reward models side by side, with and without calibration, and its errors."""

import json
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.evaluate import EvaluateConfig, evaluate, main, read_results
from vlmr.calibrate.fit import CalibrateConfig, calibrate
from vlmr.calibrate.fitting import CalibrationWarning
from vlmr.finetune.reward_model import RewardModel

from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError


@pytest.fixture(scope="module")
def models(babyai_dataset, tmp_path_factory):
    goals = read_manifest(babyai_dataset)["goals"]
    root = tmp_path_factory.mktemp("evaluate")
    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        dirs.append(RewardModel.create("vlmr-tiny", goals, negatives=["a grey wall"]).save(root / f"rm{seed}"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calibrate(CalibrateConfig(reward_model=str(dirs[0]), data=str(babyai_dataset), min_positives=3,
                                  plots=False, logger="none"), progress=False)
    return dirs


def test_side_by_side_table_and_json(models, babyai_dataset, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["--model", str(models[0]), "--calibration", "auto", "--name", "calibrated",
                 "--model", str(models[1]), "--name", "defaults", "--data", str(babyai_dataset),
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("macro metric"))
    assert header.split()[-2:] == ["calibrated", "defaults"]
    for row in ("own-goal precision", "own-goal AUROC", "pooled F1", "pooled ECE"):
        assert any(line.startswith(row) and len(line.split()) == len(row.split()) + 2 for line in printed.splitlines())
    results = json.loads(out.read_text())
    a, b = results["models"]
    assert (a["name"], b["name"], results["split"]) == ("calibrated", "defaults", "test")
    assert b["calibration"] is None and b["thresholds"] == [0.5] * 18
    assert b["temperatures"] == pytest.approx([0.01] * 18)  # the float32 values the model holds
    assert a["model_id"] != b["model_id"] and read_results(out) == results


def test_evaluate_scores_afresh_and_counts_what_the_reward_does(models, babyai_dataset, tmp_path):
    cal_path = models[0] / "calibration.json"
    cache = sorted((models[0] / "calibration").glob("scores-*.npz"))
    stamps = [p.stat().st_mtime_ns for p in cache]
    res = evaluate(EvaluateConfig(models=[{"dir": str(models[0]), "calibration": str(cal_path)}],
                                  data=str(babyai_dataset), cache_scores=False), progress=False)
    assert [p.stat().st_mtime_ns for p in cache] == stamps  # scored by the model, calibrate's cache untouched
    m = res["models"][0]["metrics"]
    # by hand: the calibrated reward model's own 0/1 reward on each test frame, for its own mission
    rm = RewardModel.load(models[0], calibration=cal_path)
    test = load_split_arrays(babyai_dataset, "test", goals=rm.goals)
    rows = np.flatnonzero(test.own_goal >= 0)
    reward = rm.reward(test.frames[rows], test.own_goal[rows]).numpy() > 0
    truth = test.labels[rows, test.own_goal[rows]] > 0
    tp, fp, fn = (int(np.sum(reward & truth)), int(np.sum(reward & ~truth)), int(np.sum(~reward & truth)))
    assert (m["own_goal"]["tp"], m["own_goal"]["fp"], m["own_goal"]["fn"]) == (tp, fp, fn)
    assert m["own_goal"]["precision"] == (pytest.approx(tp / (tp + fp), abs=1e-6) if tp + fp else None)
    assert m["own_goal"]["recall"] == pytest.approx(tp / (tp + fn), abs=1e-6)
    # and calibrate, from its own scoring pass, wrote the same figures for this split
    cal = json.loads(cal_path.read_text())
    for view in ("pooled", "own_goal"):
        for key in ("precision", "recall", "f1", "auroc", "ap", "ece"):
            assert m["macro"][view][key] == pytest.approx(cal["metrics"]["macro"][view][key], abs=1e-5), (view, key)


def test_results_of_an_older_version_are_refused(tmp_path):
    old = tmp_path / "results.json"
    old.write_text(json.dumps({"version": 1, "models": []}))
    with pytest.raises(VlmrError, match=r"version 1; this vlmr reads version 2\. Regenerate them with `vlmr evaluate`"):
        read_results(old)


def test_wandb_logging_offline(models, babyai_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    evaluate(EvaluateConfig(models=[{"dir": str(models[1])}], data=str(babyai_dataset), out=str(tmp_path / "r.json"),
                            logger="wandb"), progress=False)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_errors(models, babyai_dataset, tmp_path, capsys):
    from vlmr.cli import main as vlmr

    data = ["--data", str(babyai_dataset), "--quiet"]
    # a calibration fitted for another model
    assert vlmr(["evaluate", "--model", str(models[1]), "--calibration", str(models[0] / "calibration.json"), *data]) == 2
    assert "was fitted for reward model" in capsys.readouterr().err
    # --calibration auto without a calibration file
    assert vlmr(["evaluate", "--model", str(models[1]), "--calibration", "auto", *data]) == 2
    assert "run `vlmr calibrate`" in capsys.readouterr().err
    # --calibration must follow its --model
    with pytest.raises(SystemExit):
        main(["--calibration", "x.json", "--model", str(models[0]), *data])
    assert "must follow the --model" in capsys.readouterr().err
    with pytest.raises(VlmrError, match="distinct --name"):
        main(["--model", str(models[0]), "--model", str(models[0]), *data])
    with pytest.raises(VlmrError, match=r"limit \(--limit\) must be >= 1"):
        main(["--model", str(models[0]), "--limit", "0", *data])
    goals = read_manifest(babyai_dataset)["goals"]
    torch.manual_seed(0)
    fewer = RewardModel.create("vlmr-tiny", goals[:3]).save(tmp_path / "fewer")
    with pytest.raises(VlmrError, match="goal sets differ"):
        main(["--model", str(fewer), *data])


# ------------------------------------------------------------------------------------------------ paraphrases
PARAPHRASES = ["stand right in front of the {color} {type}", "go to the {color} {type}"]  # the second: no change


def test_paraphrases_report_auroc_per_wording(models, babyai_dataset, tmp_path, capsys):
    from vlmr.rl.collect.rerender import main as evaluate_cli

    out = tmp_path / "results.json"
    args = ["--model", str(models[0]), "--calibration", "auto", "--name", "calibrated", "--model", str(models[1]),
            "--data", str(babyai_dataset), "--out", str(out), "--quiet"]
    assert evaluate_cli([*args, *(x for t in PARAPHRASES for x in ("--paraphrase", t))]) == 0
    printed = capsys.readouterr().out
    results = read_results(out)
    assert results["paraphrases"] == PARAPHRASES
    for m in results["models"]:
        original, reworded, same = m["wordings"]
        assert [w["wording"] for w in m["wordings"]] == ["original", *PARAPHRASES]
        assert all(w["goals"] == 18 for w in m["wordings"])  # every goal parses
        macro = m["metrics"]["macro"]
        assert original["auroc_own_goal"] == macro["own_goal"]["auroc"]
        assert original["auroc_pooled"] == macro["pooled"]["auroc"]
        # the unchanged wording scores the same captions, so the same AUROC: the columns line up
        assert (same["auroc_own_goal"], same["auroc_pooled"]) == (original["auroc_own_goal"], original["auroc_pooled"])
        assert reworded["reworded"]["go to the red ball"] == "stand right in front of the red ball"
        assert reworded["auroc_pooled"] != original["auroc_pooled"]  # other captions, other scores
    assert "AUROC by mission wording" in printed and "| stand right in front of the {color} {type} |" in printed
    # without paraphrases, the results are as before: nothing about wordings
    assert evaluate_cli([*args]) == 0 and "wordings" not in read_results(out)["models"][0]


def test_a_reworded_goal_is_scored_without_its_original_wording(models, babyai_dataset):
    """By hand: a model whose goal set is the reworded sentences, with the same weights and temperatures."""
    from vlmr.calibrate.metrics import evaluate_scores
    from vlmr.rl.collect.rerender import evaluate as run_evaluate
    from vlmr.rl.envs.babyai_goals import goal_slots

    res = run_evaluate(EvaluateConfig(models=[{"dir": str(models[1])}], data=str(babyai_dataset),
                                      paraphrases=PARAPHRASES[:1], limit=64), progress=False)
    rm = RewardModel.load(models[1])
    goals = rm.goals
    reworded = RewardModel(rm.clip, rm.tokenizer, rm.spec.__class__(
        arch=rm.spec.arch, goals=[PARAPHRASES[0].format(**goal_slots(g)) for g in goals], negatives=rm.spec.negatives))
    arrays = load_split_arrays(babyai_dataset, "test", goals=goals, limit=64)
    sims = reworded.similarities(arrays.frames).numpy()
    m = evaluate_scores(sims, arrays.labels, arrays.own_goal, rm.temperatures, rm.thresholds, goals)
    wording = res["models"][0]["wordings"][1]
    assert wording["auroc_own_goal"] == pytest.approx(m["macro"]["own_goal"]["auroc"], abs=1e-6)
    assert wording["auroc_pooled"] == pytest.approx(m["macro"]["pooled"]["auroc"], abs=1e-6)


def test_paraphrase_errors(models, babyai_dataset):
    from vlmr.calibrate.paraphrases import reword

    base = {"models": [{"dir": str(models[0])}], "data": str(babyai_dataset)}
    for template in ("stand near it", "stand near the {colour} {type}", "face the {type}"):
        with pytest.raises(VlmrError, match=r"must name \{color\} and \{type\} once each") as err:
            EvaluateConfig(**base, paraphrases=[template])
        assert "\n" not in str(err.value)
    with pytest.raises(VlmrError, match="need the environment's goal parser"):
        evaluate(EvaluateConfig(**base, paraphrases=PARAPHRASES[:1]), progress=False)

    def slots(g):
        return dict(zip(("color", "type"), g.split()[-2:])) if g != "dance" else None

    with pytest.raises(VlmrError, match="words 'go to the red ball' and 'pick up the red ball' alike"):
        reword(["go to the red ball", "pick up the red ball"], [], "reach the {color} {type}", slots, "m")
    with pytest.raises(VlmrError, match="another of m's captions"):
        reword(["go to the red ball", "a red ball"], [], "a {color} {type}", slots, "m")
    with pytest.raises(VlmrError, match="none of the 1 goals of m parses"):
        reword(["dance"], [], "a {color} {type}", slots, "m")
    assert reword(["go to the red ball", "dance"], [], "reach the {color} {type}", slots, "m") == {
        "go to the red ball": "reach the red ball"}
