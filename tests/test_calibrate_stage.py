"""`vlmr calibrate` end to end on the small BabyAI dataset with a vlmr-tiny reward model, and its bad inputs."""

import io
import json
import shutil
import tarfile
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.fit import CalibrateConfig, calibrate
from vlmr.calibrate.fitting import CalibrationWarning
from vlmr.finetune.reward_model import RewardModel

from vlmr.core.calibration_file import read_calibration
from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, sha256_file

PNG = b"\x89PNG\r\n\x1a\n"


def make_model(goals, path, seed=0, **fields):
    torch.manual_seed(seed)
    rm = RewardModel.create("vlmr-tiny", goals, negatives=["a grey wall"], **fields)
    rm.save(path)
    return path


def config(model_dir, data, **kw):
    base = {"reward_model": str(model_dir), "data": str(data), "min_positives": 3, "logger": "csv"}
    return CalibrateConfig(**(base | kw))


def quiet_calibrate(cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # a random-init model misses every target
        return calibrate(cfg, progress=False)


@pytest.fixture(scope="module")
def calibrated(babyai_dataset, tmp_path_factory):
    goals = read_manifest(babyai_dataset)["goals"]
    model_dir = make_model(goals, tmp_path_factory.mktemp("cal") / "reward_model")
    cfg = config(model_dir, babyai_dataset)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = calibrate(cfg, progress=False)
    return cfg, result, [str(w.message) for w in record if w.category is CalibrationWarning]


def test_calibration_file_is_valid_and_complete(calibrated, babyai_dataset):
    cfg, result, warned = calibrated
    rm = RewardModel.load(cfg.reward_model)
    data = read_calibration(result["calibration"], model_id=rm.model_id, goals=rm.goals)
    assert result["calibration"] == cfg_path(cfg)
    val_pos = read_manifest(babyai_dataset)["splits"]["val"]["positives"]
    for goal, e in data["goals"].items():
        assert e["temperature"] > 0 and 0 <= e["threshold"] <= 1 and e["criterion"] == "precision_at"
        assert e["fallback"] is (val_pos.get(goal, 0) < cfg.min_positives), goal
        if e["fallback"]:  # the pooled fit claims nothing for a goal it could not fit
            assert e["target_met"] is None and e["guaranteed"] is False
            assert e["temperature"] == data["fit"]["shared"]["temperature"]
            assert e["threshold"] == data["fit"]["shared"]["threshold"]
        t = e["test"]
        assert {"positives", "negatives", "precision", "recall", "f1", "auroc", "ap", "ece", "auroc_before",
                "ece_before"} <= set(t)
        if t["positives"] == 0:  # one class in test: no AUROC, and the file says why
            assert t["auroc"] is None and any("no positives" in n for n in t["notes"])
    assert any(e["fallback"] for e in data["goals"].values())  # this small split has rare goals
    assert any("too little data" in w for w in warned)
    # the headline: own-goal metrics exist (BabyAI frames have missions) next to pooled ones
    m = data["metrics"]
    assert m["split"] == "test" and m["own_goal"]["positives"] + m["own_goal"]["negatives"] == m["frames"]
    assert m["pooled"]["positives"] + m["pooled"]["negatives"] == m["frames"] * len(rm.goals)
    assert set(m["macro"]) == {"pooled", "own_goal"} and m["macro"]["own_goal"]["ece_before"] is not None
    assert data["criterion"] == {"name": "precision_at", "target_precision": 0.95,
                                 "description": "largest recall whose precision >= 0.95 holds with confidence 0.9 "
                                                "(Clopper-Pearson, fixed-sequence scan)", "confidence": 0.9}


def cfg_path(cfg):
    from pathlib import Path

    return Path(cfg.reward_model) / "calibration.json"


def test_reported_metrics_are_what_the_loaded_reward_model_does(calibrated, babyai_dataset):
    cfg, result, _ = calibrated
    rm = RewardModel.load(cfg.reward_model, calibration=result["calibration"])
    test = load_split_arrays(babyai_dataset, "test", goals=rm.goals)
    entries = rm.calibration["goals"]
    for g in (0, len(rm.goals) - 1):
        goal = rm.goals[g]
        reward = rm.reward(test.frames, [g] * len(test.frames)).numpy() > 0
        labels = test.labels[:, g] > 0
        t = entries[goal]["test"]
        assert (int((reward & labels).sum()), int((reward & ~labels).sum())) == (t["tp"], t["fp"]), goal
    rows = np.flatnonzero(test.own_goal >= 0)
    reward = rm.reward(test.frames[rows], test.own_goal[rows]).numpy() > 0
    own = test.labels[rows, test.own_goal[rows]] > 0
    assert int((reward & own).sum()) == rm.calibration["metrics"]["own_goal"]["tp"]
    assert int((reward & ~own).sum()) == rm.calibration["metrics"]["own_goal"]["fp"]


def test_plots_report_and_provenance_are_written(calibrated):
    cfg, result, _ = calibrated
    art = cfg_path(cfg).with_suffix("")
    names = {p.name for p in result["plots"]}
    assert {"pr_curves-1.png", "reliability.png", "histograms-1.png", "pr_curves-2.png"} <= names  # 18 goals, 12 a page
    for p in result["plots"]:
        blob = p.read_bytes()
        assert blob.startswith(PNG) and len(blob) > 5000, p
    report = (art / "report.md").read_text()
    assert "own-goal, macro" in report and "pooled, micro" in report and "](reliability.png)" in report
    assert "| - |" not in report and " nan " not in report  # undefined values read "n/a"
    assert report.count("| go to the ") == 18
    run = json.loads((art / "run.json").read_text())
    assert run["stage"] == "calibrate" and run["config"]["reward_model"] == cfg.reward_model and "time_utc" in run
    csv = (art / "metrics.csv").read_text()
    assert "reward/own_goal/precision," in csv and "reward/macro_pooled/ece_before," in csv
    assert len(list(art.glob("scores-*.npz"))) == 2


def test_same_inputs_give_identical_files(calibrated, tmp_path):
    cfg, result, _ = calibrated
    first = result["calibration"].read_bytes()
    # scored again by the model, without any cache
    fresh = quiet_calibrate(config(cfg.reward_model, cfg.data, out=str(tmp_path / "b.json"), plots=False,
                                   cache_scores=False))
    assert fresh["calibration"].read_bytes() == first
    assert json.loads((tmp_path / "b" / "run.json").read_text())["scores_cached"] == {"fit": False, "eval": False}
    assert not list((tmp_path / "b").glob("scores-*"))
    # from the cached similarity matrices of the first run
    shutil.copytree(cfg_path(cfg).with_suffix(""), tmp_path / "c")
    cached = quiet_calibrate(config(cfg.reward_model, cfg.data, out=str(tmp_path / "c.json"), plots=False))
    assert json.loads((tmp_path / "c" / "run.json").read_text())["scores_cached"] == {"fit": True, "eval": True}
    assert cached["calibration"].read_bytes() == first


def test_calibration_for_another_model_is_refused(calibrated, tmp_path):
    cfg, result, _ = calibrated
    goals = RewardModel.load(cfg.reward_model).goals
    other = make_model(goals, tmp_path / "other", seed=1)
    with pytest.raises(VlmrError, match="was fitted for reward model"):
        RewardModel.load(other, calibration=result["calibration"])


def test_goal_sets_must_match(babyai_dataset, tmp_path):
    goals = read_manifest(babyai_dataset)["goals"]
    fewer = make_model(goals[:-1], tmp_path / "fewer")
    with pytest.raises(VlmrError, match=rf"in the data only \['{goals[-1]}'\], in the model only \[\]"):
        quiet_calibrate(config(fewer, babyai_dataset))
    more = make_model([*goals, "go to the pink unicorn"], tmp_path / "more")
    with pytest.raises(VlmrError, match=r"in the model only \['go to the pink unicorn'\]"):
        quiet_calibrate(config(more, babyai_dataset))


def rewrite_split(src, dst, split, edit):
    """Copy a dataset, passing every meta.json of `split` through edit(meta) -> meta."""
    shutil.copytree(src, dst)
    for shard in dst.glob(f"{split}-*.tar"):
        members = []
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                blob = tar.extractfile(m).read()
                if m.name.endswith("meta.json"):
                    blob = json.dumps(edit(json.loads(blob))).encode()
                members.append((m.name, blob))
        with tarfile.open(shard, "w") as tar:
            for name, blob in members:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    manifest = read_manifest(dst)  # re-signed: these tests are about the edited labels, not damaged shards
    for entry in manifest["splits"][split]["shards"]:
        entry["sha256"] = sha256_file(dst / entry["name"])
    atomic_write_json(dst / "manifest.json", manifest)
    return dst


def test_bad_data_gives_clear_errors(calibrated, babyai_dataset, tmp_path):
    cfg, _, _ = calibrated
    unlabelled = rewrite_split(babyai_dataset, tmp_path / "unlabelled", "val", lambda m: m | {"labels": {}})
    with pytest.raises(VlmrError, match=r"split 'val'.*has no labels"):
        quiet_calibrate(config(cfg.reward_model, unlabelled, out=str(tmp_path / "u.json")))
    negatives = rewrite_split(babyai_dataset, tmp_path / "negatives", "val",
                              lambda m: m | {"labels": dict.fromkeys(m["labels"], 0)})
    with pytest.raises(VlmrError, match=r"split 'val'.*no positive label for any goal"):
        quiet_calibrate(config(cfg.reward_model, negatives, out=str(tmp_path / "n.json")))
    with pytest.raises(VlmrError, match=r"no 'train2' split"):
        quiet_calibrate(config(cfg.reward_model, babyai_dataset, fit_split="train2", out=str(tmp_path / "t.json")))
    assert not (tmp_path / "u.json").exists() and not (tmp_path / "n.json").exists()


def test_cli_runs_and_reports_bad_config(calibrated, tmp_path, capsys):
    from vlmr.cli import main

    cfg, _, _ = calibrated
    yaml_path = tmp_path / "cal.yaml"
    yaml_path.write_text(f"reward_model: {cfg.reward_model}\ndata: {cfg.data}\nlogger: none\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        assert main(["calibrate", str(yaml_path), f"out={tmp_path / 'c.json'}", "plots=false",
                     "criterion=max_f1", "min_positives=2"]) == 0
    out = capsys.readouterr().out
    assert "vlmr calibrate: 18 goals" in out and "own-goal macro on test" in out
    assert json.loads((tmp_path / "c.json").read_text())["criterion"]["name"] == "max_f1"
    assert main(["calibrate", str(yaml_path), "eval_split=val"]) == 2
    assert "metrics must come from a split that was not fitted" in capsys.readouterr().err


def test_calibration_of_an_older_version_is_refused(calibrated, tmp_path):
    cfg, result, _ = calibrated
    old = json.loads(result["calibration"].read_text()) | {"version": 1}  # v1 wrote precision 0.0 for "undefined"
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(VlmrError, match=r"version 1; this vlmr reads version 2\. Regenerate it with `vlmr calibrate CONFIG`"):
        RewardModel.load(cfg.reward_model, calibration=tmp_path / "old.json")
