"""The reward model: batching, modes, calibration, save/load and identity, and its errors."""

import json

import numpy as np
import pytest
import torch
from model_fixtures import GOALS, tiny_reward_model  # noqa: F401
from vlmr.finetune.reward_model import RewardModel, make_spec

from vlmr.core.calibration_file import write_calibration
from vlmr.core.errors import VlmrError


def frames(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_batched_probs_equal_per_frame_probs(tiny_reward_model):
    rm = tiny_reward_model
    f, goals = frames(6), [0, 1, 2, 2, 1, 0]
    batched = rm.probs(f, goals)
    single = torch.cat([rm.probs(f[i:i + 1], goals[i:i + 1]) for i in range(6)])
    assert torch.allclose(batched, single, atol=1e-5)
    # goal sentences and ids are interchangeable
    assert torch.allclose(rm.probs(f, [GOALS[g] for g in goals]), batched)
    # the own-goal probability is the matching column of the all-goals matrix
    assert torch.allclose(rm.all_probs(f)[torch.arange(6), torch.tensor(goals)], batched, atol=1e-6)


def test_reward_modes(tiny_reward_model):
    rm = tiny_reward_model
    f, goals = frames(5, seed=1), [0, 1, 2, 0, 1]
    p = rm.probs(f, goals)
    rm.set_calibration([0.01] * 3, [float(p.median())] * 3)
    try:
        binary = rm.reward(f, goals)
        assert binary.tolist() == (p >= p.median()).float().tolist()
        rm.spec.reward_mode = "prob"
        assert torch.allclose(rm.reward(f, goals), p)
        # goal_baseline with alpha = 0 is vlmrm's unprojected reward: 1 - |x - g|^2 / 2 = cos(x, g) for unit vectors
        rm.spec.reward_mode, rm.spec.alpha = "goal_baseline", 0.0
        cosine = (rm.embed_images(f) * rm.text_embeddings()[torch.tensor(goals)]).sum(-1)
        assert torch.allclose(rm.reward(f, goals), cosine, atol=1e-5)
    finally:
        rm.spec.reward_mode, rm.spec.alpha = "binary", 0.5
        rm.set_calibration([0.01] * 3, [0.5] * 3)


@pytest.mark.parametrize("alpha, expected", [(0.0, 0.6), (0.5, 0.63), (1.0, 0.64)])
def test_goal_baseline_projection_by_hand(alpha, expected):
    """x = (0.6, 0.8), goal g = (1, 0), baseline b = (0, 1): the goal-baseline line has direction (1, -1)/sqrt 2.
    x - g = (-0.4, 0.8); its part along the line is (-0.6, 0.6), so r = 1 - |alpha (-0.6, 0.6) + (1 - alpha)
    (-0.4, 0.8)|^2 / 2: 1 - 0.8/2 (alpha 0, the cosine 0.6), 1 - 0.74/2 (alpha 0.5), 1 - 0.72/2 (alpha 1)."""
    from vlmr.finetune.reward_math import goal_baseline_reward

    r = goal_baseline_reward(torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 1.0]), alpha)
    assert r.item() == pytest.approx(expected, abs=1e-6)


def test_text_embeddings_are_computed_once(tiny_reward_model, monkeypatch):
    rm = tiny_reward_model
    rm.text_embeddings()
    calls = []
    monkeypatch.setattr(rm.clip, "encode_text", lambda *a: calls.append(1))
    rm.probs(frames(2), [0, 1])
    assert calls == []


def test_save_load_round_trip_and_stable_identity(tiny_reward_model, tmp_path):
    rm = tiny_reward_model
    rm.save(tmp_path / "a")
    loaded = RewardModel.load(tmp_path / "a")
    f = frames(4, seed=2)
    assert torch.equal(loaded.probs(f, [0, 1, 2, 0]), rm.probs(f, [0, 1, 2, 0]))
    assert loaded.model_id == rm.model_id
    loaded.save(tmp_path / "b")  # a copy elsewhere is the same model
    assert RewardModel.load(tmp_path / "b").model_id == rm.model_id
    spec = json.loads((tmp_path / "a" / "reward_model.json").read_text())
    assert spec["pretrained"] == "open_clip_model.safetensors" and spec["version"] == 1
    other = RewardModel.load(tmp_path / "a")
    other_spec = make_spec(**{**spec, "goals": GOALS[:2]})
    from vlmr.finetune.reward_model import identity_hash
    assert identity_hash(other_spec, None) != other.model_id


def test_calibration_file_sets_per_goal_values_and_rejects_other_models(tiny_reward_model, tmp_path):
    rm = tiny_reward_model
    entries = {g: {"temperature": 0.02 * (i + 1), "threshold": 0.1 * (i + 1)} for i, g in enumerate(GOALS)}
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    rm.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm", calibration=tmp_path / "cal.json")
    assert torch.allclose(loaded.temperatures, torch.tensor([0.02, 0.04, 0.06]))
    assert torch.allclose(loaded.thresholds, torch.tensor([0.1, 0.2, 0.3]))
    write_calibration(tmp_path / "other.json", "f" * 64, entries)
    with pytest.raises(VlmrError, match="fitted for reward model ffffffffffff"):
        RewardModel.load(tmp_path / "rm", calibration=tmp_path / "other.json")


@pytest.mark.parametrize("goals, message", [([], "goal set is empty"), (["a", "b", "a"], "duplicate goals")])
def test_bad_goal_sets(goals, message):
    with pytest.raises(VlmrError, match=message):
        make_spec(arch="vlmr-tiny", goals=goals)


def test_unknown_goal_and_mismatched_batch(tiny_reward_model):
    with pytest.raises(VlmrError, match="'go to the purple box' is not in this reward model's goal set"):
        tiny_reward_model.probs(frames(1), ["go to the purple box"])
    with pytest.raises(VlmrError, match="out of range"):
        tiny_reward_model.probs(frames(1), [7])
    with pytest.raises(VlmrError, match="2 frames but 1 goal ids"):
        tiny_reward_model.probs(frames(2), [0])


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(VlmrError, match="unknown architecture 'vlmr-tinny'.*vlmr-tiny"):
        RewardModel.create("vlmr-tinny", GOALS)


def test_pretrained_tag_offline_names_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VlmrError, match="needs a download.*offline.*local checkpoint"):
        RewardModel.create("ViT-B-32", GOALS, pretrained="openai")


def test_missing_checkpoint_and_unknown_tag():
    with pytest.raises(VlmrError, match="not found"):
        RewardModel.create("vlmr-tiny", GOALS, pretrained="/nonexistent/clip.safetensors")
    with pytest.raises(VlmrError, match="unknown pretrained tag 'nope'"):
        RewardModel.create("vlmr-tiny", GOALS, pretrained="nope")


def test_local_checkpoint_is_referenced_by_hash(tiny_reward_model, tmp_path):
    tiny_reward_model.save(tmp_path / "base")
    ckpt = tmp_path / "base" / "open_clip_model.safetensors"
    rm = RewardModel.create("vlmr-tiny", GOALS, pretrained=str(ckpt), negatives=["an empty room"],
                            templates=["{goal}", "a view where you {goal}"])
    f = frames(3, seed=3)
    assert torch.equal(rm.probs(f, [0, 1, 2]), tiny_reward_model.probs(f, [0, 1, 2]))
    rm.save(tmp_path / "zs")
    assert not (tmp_path / "zs" / "open_clip_model.safetensors").exists()  # referenced, not copied
    ckpt.write_bytes(ckpt.read_bytes()[:-8] + b"xxxxxxxx")
    with pytest.raises(VlmrError, match="changed since"):
        RewardModel.load(tmp_path / "zs")


def test_reward_model_dir_errors(tmp_path):
    with pytest.raises(VlmrError, match="reward model spec not found"):
        RewardModel.load(tmp_path)
    (tmp_path / "reward_model.json").write_text(json.dumps({"version": 1, "arch": "vlmr-tiny", "goals": ["a", "b"],
                                                            "colour": "red"}))
    with pytest.raises(VlmrError, match="unknown key 'colour'"):
        RewardModel.load(tmp_path)
    (tmp_path / "reward_model.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(VlmrError, match="version 99"):
        RewardModel.load(tmp_path)


def lora_reward_model(base: RewardModel, tmp_path) -> RewardModel:
    """base saved to tmp_path/base, and a reward model on that file with random (non-zero) LoRA weights."""
    from peft import LoraConfig, get_peft_model

    base.save(tmp_path / "base")
    rm = RewardModel.create("vlmr-tiny", GOALS, pretrained=str(tmp_path / "base" / "open_clip_model.safetensors"))
    rm.clip = get_peft_model(rm.clip, LoraConfig(r=4, target_modules=["c_fc", "c_proj"], init_lora_weights=False))
    rm.invalidate_text_cache()
    return rm


def test_lora_adapter_dir_round_trip(tiny_reward_model, tmp_path):
    rm = lora_reward_model(tiny_reward_model, tmp_path)
    f = frames(4, seed=4)
    before = rm.probs(f, [0, 1, 2, 0])
    rm.save(tmp_path / "adapted")
    names = {p.name for p in (tmp_path / "adapted").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "reward_model.json"} <= names
    for merge in (True, False):
        loaded = RewardModel.load(tmp_path / "adapted", merge_lora=merge)
        assert torch.allclose(loaded.probs(f, [0, 1, 2, 0]), before, atol=1e-5)
        assert loaded.model_id == rm.model_id
    assert rm.model_id != RewardModel.load(tmp_path / "base").model_id


def test_full_weights_save_round_trips_a_lora_model(tiny_reward_model, tmp_path):
    """save(full_weights=True) merges LoRA into the CLIP: the dir has reward_model.json and
    open_clip_model.safetensors (README's table), no adapter files, and loads to the same P(g|o)."""
    rm = lora_reward_model(tiny_reward_model, tmp_path)
    f = frames(4, seed=5)
    before = rm.all_probs(f)
    rm.save(tmp_path / "full", full_weights=True)
    assert {p.name for p in (tmp_path / "full").iterdir()} == {"reward_model.json", "open_clip_model.safetensors"}
    spec = json.loads((tmp_path / "full" / "reward_model.json").read_text())
    assert spec["pretrained"] == "open_clip_model.safetensors"
    loaded = RewardModel.load(tmp_path / "full")
    assert torch.allclose(loaded.all_probs(f), before, atol=1e-5)
    assert not torch.allclose(RewardModel.load(tmp_path / "base").all_probs(f), before, atol=1e-3)  # LoRA counted


def test_reward_model_id_without_loading_weights(tiny_reward_model, tmp_path):
    from vlmr.finetune.reward_model import reward_model_id

    tiny_reward_model.save(tmp_path / "rm")
    assert reward_model_id(tmp_path / "rm") == tiny_reward_model.model_id


def test_a_goal_alone_is_refused_with_both_fixes_and_works_with_negatives():
    from vlmr.finetune.reward_model import GENERIC_NEGATIVES

    with pytest.raises(VlmrError, match="alone has nothing to be compared with.*negative captions.*or more goals"):
        RewardModel.create("vlmr-tiny", ["go to the red ball"])
    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", ["go to the red ball"], negatives=list(GENERIC_NEGATIVES))
    frames = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8).numpy()
    p = rm.probs(frames, [0] * 8)
    assert (p < 1 - 1e-6).all() and float(p.std()) > 0  # no longer 1 for every frame: negatives compete


def test_an_empty_goal_sentence_is_refused():
    with pytest.raises(VlmrError, match="is empty"):
        RewardModel.create("vlmr-tiny", ["go to the red ball", "  "])
