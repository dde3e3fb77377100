"""`vlmr calibrate` with extra_data: several datasets fitted together, evaluated one by one and pooled.

    .venv/bin/python -m pytest tests/test_calibrate_extra_data.py -q

A vlmr-tiny reward model on the session's small shapes dataset plus a second, smaller shapes collection.
"""

import json
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.fit import CalibrateConfig, calibrate
from vlmr.calibrate.fitting import CalibrationWarning
from vlmr.finetune.reward_model import RewardModel

from vlmr.core.dataset import read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import sha256_file


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    out = tmp_path_factory.mktemp("extra") / "shapes_extra"
    return collect(CollectConfig(name="shapes_extra", source="shapes", out_dir=str(out), image_size=64,
                                 frames=SplitFrames(train=32, val=64, test=64), shard_size=32, seed=3), progress=False)


@pytest.fixture(scope="module")
def model(shapes_dataset, tmp_path_factory):
    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", read_manifest(shapes_dataset)["goals"], negatives=["an empty canvas"])
    return rm.save(tmp_path_factory.mktemp("model") / "reward_model")


def run(model, data, out, **kw):
    cfg = CalibrateConfig(reward_model=str(model), data=str(data), out=str(out), min_positives=2, logger="none",
                          plots=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # a random-init model misses every target
        return cfg, calibrate(cfg, progress=False)


def test_extra_data_joins_the_fit_and_is_evaluated_per_dataset_and_pooled(model, shapes_dataset, extra, tmp_path):
    _, result = run(model, shapes_dataset, tmp_path / "cal.json", extra_data=[str(extra)])
    cal = json.loads(result["calibration"].read_text())
    manifests = [read_manifest(shapes_dataset), read_manifest(extra)]
    fit = cal["fit"]
    assert fit["frames"] == 128 + 64 and [d["frames"] for d in fit["datasets"]] == [128, 64]
    assert [(d["path"], d["name"], d["manifest_sha256"], d["skipped"]) for d in fit["datasets"]] == [
        (str(shapes_dataset), "shapes", sha256_file(shapes_dataset / "manifest.json"), 0),
        (str(extra), "shapes_extra", sha256_file(extra / "manifest.json"), 0)]
    for goal, e in cal["goals"].items():  # each goal's fit counts every dataset's val positives
        assert e["fit"]["positives"] == sum(m["splits"]["val"]["positives"].get(goal, 0) for m in manifests)
    metrics = cal["metrics"]
    assert metrics["frames"] == 128 + 64 and [d["frames"] for d in metrics["datasets"]] == [128, 64]
    for key in ("tp", "fp", "fn", "tn"):  # the headline figures pool the datasets' test frames
        assert metrics["pooled"][key] == sum(d["pooled"][key] for d in metrics["datasets"])
    assert all(d["macro"]["pooled"] for d in metrics["datasets"])
    assert "## Per dataset" in result["report"].read_text()
    art = tmp_path / "cal"
    assert len(list(art.glob("scores-*.npz"))) == 4  # each dataset's splits cached on their own shards
    info = json.loads((art / "run.json").read_text())
    assert [d["scores_cached"] for d in info["datasets"]] == [{"fit": False, "eval": False}] * 2
    # a rerun reuses every dataset's scores and writes the same bytes
    _, again = run(model, shapes_dataset, tmp_path / "cal.json", extra_data=[str(extra)])
    assert json.loads((art / "run.json").read_text())["scores_cached"] == {"fit": True, "eval": True}
    assert again["calibration"].read_bytes() == result["calibration"].read_bytes()
    # the fit differs from the main data's alone: the extra frames took part
    _, alone = run(model, shapes_dataset, tmp_path / "alone.json")
    solo = json.loads(alone["calibration"].read_text())
    assert solo["fit"]["frames"] == 128 and len(solo["metrics"]["datasets"]) == 1
    temps = [(cal["goals"][g]["temperature"], solo["goals"][g]["temperature"]) for g in cal["goals"]]
    assert not np.allclose(*zip(*temps))


def test_extra_data_must_share_the_goal_set_and_appear_once(model, shapes_dataset, babyai_dataset, tmp_path):
    with pytest.raises(VlmrError, match=rf"goal sets differ between dataset {babyai_dataset} and reward model") as err:
        run(model, shapes_dataset, tmp_path / "a.json", extra_data=[str(babyai_dataset)])
    assert "\n" not in str(err.value) and not list((tmp_path / "a").glob("scores-*"))  # refused before scoring
    with pytest.raises(VlmrError, match="is already given"):
        run(model, shapes_dataset, tmp_path / "b.json", extra_data=[str(shapes_dataset / ".")])
