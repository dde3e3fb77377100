"""The rollout recorder: the agents of a tiny compare run replayed into a labelled dataset, and its errors.

    .venv/bin/python -m pytest tests/test_rollouts.py -q

The compare run is conftest's refine_compare: its reward fires on some GoToObj frames and not on others.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from vlmr.rl.collect.rollouts import RolloutConfig, agent_seeds, record_rollouts, seed_split
from vlmr.rl.envs import babyai

from vlmr.core.config import build_config
from vlmr.core.dataset import iter_split, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.quality import QualityWarning
from vlmr.core.verify import verify_dataset

SMALL = RolloutConfig(episodes_per_agent=8, episodes_per_shard=4, num_envs=4, torch_threads=1)


@pytest.fixture(scope="module")
def compare_dir(refine_compare):
    return refine_compare["compare_dir"]


def test_recorded_frames_replay_to_their_labels_in_disjoint_seeds(compare_dir, babyai_dataset, tmp_path, capsys):
    out = record_rollouts(SMALL, compare_dir, tmp_path / "rollouts", data_dir=babyai_dataset, progress=False)
    manifest, data = read_manifest(out), read_manifest(babyai_dataset)
    assert manifest["source"] == "rollouts" and manifest["goals"] == data["goals"]
    parent = manifest["parent"]
    assert parent["arm"] == "adapted" and parent["compare_dir"] == str(compare_dir)
    assert parent["reward_model_id"] == parent["trained_on_reward_model_id"] and sorted(parent["agents"]) == ["0", "1"]
    counts = manifest["rollouts"]
    assert counts["episodes"] == 16 and 0 < counts["fired"] < counts["frames_scored"]
    records = [json.loads(p.read_text()) for p in sorted((out / ".progress").glob("*.json"))]
    for r in records:  # every fired frame, and twice as many others where there are that many
        assert r["negatives"] == min(2 * r["fired"], r["frames_scored"] - r["fired"])
        assert r["samples"] == r["fired"] + r["negatives"]

    env = babyai.make_env("BabyAI-GoToObj-v0", 64)
    seeds, fired = {}, 0
    for split in manifest["splits"]:
        for sample in iter_split(out, split, strict=True):
            meta = sample["meta"]
            assert {"env", "env_seed", "episode", "step", "mission", "labels", "captions", "frame_sha256"} <= set(meta)
            assert seed_split(meta["env_seed"], SMALL.splits) == split
            assert meta["env_seed"] in agent_seeds(SMALL, meta["rollout"]["agent_seed"])
            seeds.setdefault(split, set()).add(meta["env_seed"])
            fired += meta["rollout"]["fired"]
            env.reset(seed=meta["env_seed"])  # the env seed and the actions taken replay the frame's state
            for action in meta["rollout"]["actions"]:
                env.step(action)
            assert meta["step"] == len(meta["rollout"]["actions"])
            assert meta["labels"] == babyai.label_goals(env, data["goals"])  # collect's labeller, every goal
            assert np.array_equal(sample["frame"], env.render())
            assert meta["mission"] == babyai.canonical_mission(env.unwrapped.mission)
    assert fired == counts["fired"] and sum(len(s) for s in seeds.values()) == len(set().union(*seeds.values()))
    lo, hi = manifest["env_seed_range"]
    for entry in data["splits"].values():  # no env seed of the dataset's splits (nor of PPO's evaluation)
        assert entry["env_seeds"][1] < lo or hi < entry["env_seeds"][0]
    assert lo >= 300_000_000 and all(v["ok"] for v in verify_dataset(out))

    # resumable: a finished recording is kept; a lost shard is played again, to the same bytes
    capsys.readouterr()
    record_rollouts(SMALL, compare_dir, out, data_dir=babyai_dataset, progress=False)
    assert "up to date, kept" in capsys.readouterr().out
    entry = manifest["splits"]["train"]["shards"][0]
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name != entry["name"]}
    (out / entry["name"]).unlink()
    with pytest.warns(QualityWarning, match=f"{entry['name']} does not match its progress record"):
        record_rollouts(SMALL, compare_dir, out, data_dir=babyai_dataset, progress=False)
    again = read_manifest(out)
    assert again["splits"] == manifest["splits"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p.name != entry["name"]} == kept


def test_finetune_datamodule_reads_the_rollouts(compare_dir, tmp_path):
    from vlmr.finetune.datamodule import ShardDataModule

    cfg = RolloutConfig(episodes_per_agent=6, episodes_per_shard=6, num_envs=6, splits={"train": 1, "val": 0, "test": 0})
    with pytest.warns(QualityWarning, match="split has no frames") as caught:
        out = record_rollouts(cfg, compare_dir, tmp_path / "r", progress=False)
    assert sorted(str(w.message).split(": the ")[1][:4] for w in caught) == ["test", "val "]
    assert list(read_manifest(out)["splits"]) == ["train"]
    dm = ShardDataModule(out, batch_size=4, shuffle_buffer=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape[1:] == (64, 64, 3) and batch["labels"].shape == (4, 18)
    assert (batch["own_goal"] >= 0).all()  # every rollout frame has its episode's mission


def test_errors_name_what_to_fix(compare_dir, babyai_dataset, shapes_dataset, tmp_path):
    with pytest.raises(VlmrError, match=r"arm 'zero_shot' is not in compare run .*its arms are \['adapted'\]"):
        record_rollouts(SMALL, compare_dir, tmp_path / "a", arm="zero_shot")
    old = tmp_path / "old"
    shutil.copytree(compare_dir, old)
    (old / "runs/adapted/seed-1/agent.pt").unlink()  # a run of a vlmr that saved no agents
    with pytest.raises(VlmrError, match=r"no recorded agents \(seed-1 .*`vlmr compare CONFIG --force`"):
        record_rollouts(SMALL, old, tmp_path / "b")
    with pytest.raises(VlmrError, match="goal sets differ between dataset"):
        record_rollouts(SMALL, compare_dir, tmp_path / "c", data_dir=shapes_dataset)
    with pytest.raises(VlmrError, match=r"overlap the val split of dataset .*set rollouts.seed_start"):
        record_rollouts(RolloutConfig(seed_start=100_000_000), compare_dir, tmp_path / "d", data_dir=babyai_dataset)
    with pytest.raises(VlmrError, match="overlap the evaluation of run seed-0"):
        record_rollouts(RolloutConfig(seed_start=999_990), compare_dir, tmp_path / "e")
    with pytest.raises(VlmrError, match="sum to 1"):
        build_config(RolloutConfig, {"splits": {"train": 0.5, "val": 0.2, "test": 0.2}})
    assert not any((tmp_path / n).exists() for n in "abcde")  # nothing written before the inputs are checked
