"""`vlmr evaluate --render-size N`: the test split's episodes drawn again at N px, and scored as such."""

import json
import shutil

import numpy as np
import pytest
import torch
from vlmr.calibrate.evaluate import EvaluateConfig, evaluate
from vlmr.finetune.reward_model import RewardModel
from vlmr.rl.collect.rerender import render_dir, rerender_split

from vlmr.cli import main as vlmr
from vlmr.core.config import build_config
from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import sha256_file


@pytest.fixture
def babyai_copy(babyai_dataset, tmp_path):
    """A private copy: re-rendering writes <data>/render-<N>/ into the dataset folder."""
    return shutil.copytree(babyai_dataset, tmp_path / "babyai")


def test_same_episodes_drawn_at_another_size_and_reused(babyai_copy):
    sha = sha256_file(babyai_copy / "manifest.json")
    out = rerender_split(babyai_copy, "test", 96)
    assert out == render_dir(babyai_copy, 96) == babyai_copy / "render-96"
    native, big = load_split_arrays(babyai_copy, "test"), load_split_arrays(out, "test")
    assert big.frames.shape[1:] == (96, 96, 3) and native.frames.shape[1:] == (64, 64, 3)
    assert big.keys == native.keys and np.array_equal(big.labels, native.labels)
    assert np.array_equal(big.own_goal, native.own_goal)
    assert read_manifest(out)["image_size"] == 96 and "val" not in read_manifest(out)["splits"]
    assert sha256_file(babyai_copy / "manifest.json") == sha  # the dataset itself is untouched
    shard = out / "test-000000.tar"
    stamp = shard.stat().st_mtime_ns
    assert rerender_split(babyai_copy, "test", 96) == out and shard.stat().st_mtime_ns == stamp  # reused


def test_a_source_whose_episodes_depend_on_the_size_is_refused(shapes_dataset, tmp_path):
    data = shutil.copytree(shapes_dataset, tmp_path / "shapes")  # shapes draws its noise per pixel: other scenes
    with pytest.raises(VlmrError, match="does not show the same episodes"):
        rerender_split(data, "test", 96)


def test_evaluate_render_size_scores_the_rerendered_frames(babyai_copy, tmp_path, capsys):
    goals = read_manifest(babyai_copy)["goals"]
    torch.manual_seed(0)
    model = RewardModel.create("vlmr-tiny", goals, negatives=["a grey wall"]).save(tmp_path / "rm")
    out = tmp_path / "results.json"
    assert vlmr(["evaluate", "--model", str(model), "--data", str(babyai_copy), "--render-size", "96",
                 "--out", str(out), "--quiet"]) == 0
    assert "drawn again at 96 px" in capsys.readouterr().out
    res = json.loads(out.read_text())
    rendered = babyai_copy / "render-96"
    assert res["render_size"] == 96 and res["data"]["dir"] == str(babyai_copy)
    assert res["data"]["rendered"] == {"dir": str(rendered), "manifest_sha256": sha256_file(rendered / "manifest.json")}
    assert res["models"][0]["metrics"]["frames"] == read_manifest(babyai_copy)["splits"]["test"]["samples"]
    # the cached similarities are those of the 96 px frames resized by the model, not of the stored 64 px frames
    (cache,) = (model / "calibration").glob("scores-test-*.npz")  # the one scoring so far: the 96 px frames
    rm = RewardModel.load(model)
    with np.load(cache) as z:
        sims = z["sims"]
    frames96 = load_split_arrays(rendered, "test", limit=8).frames
    frames64 = load_split_arrays(babyai_copy, "test", limit=8).frames
    assert np.allclose(sims[:8], rm.similarities(frames96).numpy(), atol=1e-4)
    assert not np.allclose(sims[:8], rm.similarities(frames64).numpy(), atol=1e-3)
    native = evaluate(EvaluateConfig(models=[{"dir": str(model)}], data=str(babyai_copy)), progress=False)
    assert native["render_size"] is None and "rendered" not in native["data"]


def test_render_size_errors(babyai_copy, tmp_path):
    with pytest.raises(VlmrError, match="render_size"):  # scoring alone cannot draw frames
        evaluate(EvaluateConfig(models=[{"dir": str(tmp_path)}], data=str(babyai_copy), render_size=96))
    with pytest.raises(VlmrError, match="render_size"):
        build_config(EvaluateConfig, {"models": [{"dir": str(tmp_path)}], "data": str(babyai_copy), "render_size": 0})
    with pytest.raises(VlmrError, match="no 'val' split"):
        rerender_split(rerender_split(babyai_copy, "test", 80), "val", 96)


def test_a_split_with_top_up_shards_is_drawn_again_with_the_same_episodes(tmp_path):
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect
    from vlmr.rl.collect.rerender import rerender_split

    cfg = CollectConfig(name="cov", source="babyai", env_id="BabyAI-GoToObj-v0", out_dir=str(tmp_path / "d"),
                        frames=SplitFrames(train=60, val=60, test=60), shard_size=30, min_positives_per_split=4,
                        max_topup_ratio=10.0)
    out = collect(cfg, progress=False)
    assert len(read_manifest(out)["splits"]["test"]["shards"]) > 2  # top-ups happened
    rendered = rerender_split(out, "test", 96)  # raises if the episodes differ
    assert read_manifest(rendered)["splits"]["test"]["samples"] == read_manifest(out)["splits"]["test"]["samples"]
