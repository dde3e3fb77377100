"""Agents on a goal subset (e.g. the held-out goals): BabyAI episodes drawn only for those missions."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vlmr.rl.agent.vector_envs import env_goal_set, make_vector_env, missions
from vlmr.rl.envs.babyai import make_env
from vlmr.rl.experiments.compare import CompareConfig, run_config

from vlmr.core.errors import VlmrError

SUBSET = ["go to the red ball", "go to the blue key"]


def test_seeded_resets_draw_only_subset_missions_and_are_reproducible():
    env = make_env("BabyAI-GoToObj-v0", env_kwargs={"goals": SUBSET})
    plain = make_env("BabyAI-GoToObj-v0")
    seen, first = [], []
    for seed in range(40):
        env.reset(seed=seed)
        seen.append(env.unwrapped.mission)
        plain.reset(seed=seed)
        first.append(plain.unwrapped.mission)
    assert {m.replace(" a ", " the ") for m in seen} <= set(SUBSET)
    assert len({m.replace(" a ", " the ") for m in first}) > 2  # the unfiltered env draws other missions
    kept = [s for s, m in enumerate(first) if m.replace(" a ", " the ") in SUBSET]
    assert kept and all(seen[s] == first[s] for s in kept)  # a seed already in the subset is not redrawn
    again = make_env("BabyAI-GoToObj-v0", env_kwargs={"goals": SUBSET})
    again.reset(seed=7)
    env.reset(seed=7)
    assert np.array_equal(again.unwrapped.grid.encode(), env.unwrapped.grid.encode())


def test_vector_env_autoresets_stay_in_the_subset():
    envs = make_vector_env("BabyAI-GoToObj-v0", 2, AutoresetMode.SAME_STEP, env_kwargs={"goals": SUBSET})
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        envs.step(rng.integers(0, 3, size=2))
        assert set(missions(envs)) <= set(SUBSET)
    assert env_goal_set("BabyAI-GoToObj-v0", {"goals": SUBSET}) == SUBSET


def test_compare_goals_reach_every_run_and_holdout_needs_a_pipeline():
    from vlmr.rl.agent.ppo import PPOConfig

    rl = PPOConfig(env_id="BabyAI-GoToObj-v0", goal_encoding="onehot")
    cfg = CompareConfig(goals=SUBSET, rl=rl)
    arm = cfg.arms[0]
    assert run_config(cfg, arm, 0).env_kwargs == {"goals": SUBSET}
    with pytest.raises(VlmrError, match="inside `vlmr pipeline`"):
        run_config(CompareConfig(goals="holdout", rl=rl), arm, 0)
    with pytest.raises(ValueError, match="goals='seen'"):
        CompareConfig(goals="seen")


def test_goal_groups_split_seen_held_out_and_families_and_report_their_macros():
    from vlmr.calibrate.metrics import goal_groups, group_macros
    from vlmr.rl.experiments.pipeline_report import group_lines

    goals = ["go to the red ball", "go to the blue key", "pick up the red ball", "pick up the blue key"]
    groups = goal_groups(goals, ["go to the red ball", "pick up the red ball"])
    assert groups == {"seen": ["go to the blue key", "pick up the blue key"],
                      "held out": ["go to the red ball", "pick up the red ball"],
                      "goto seen": ["go to the blue key"], "goto held out": ["go to the red ball"],
                      "pickup seen": ["pick up the blue key"], "pickup held out": ["pick up the red ball"]}
    assert goal_groups(goals[:2], None) == {}  # one family, nothing held out: no groups
    own = {"auroc": 0.9, "precision": 1.0, "recall": 0.5}
    per_goal = {g: {"own": dict(own, auroc=0.9 if "blue" in g else 0.7), "all": own} for g in goals}
    macros = group_macros(per_goal, groups)
    assert macros["held out"]["own_goal"]["auroc"] == 0.7 and macros["seen"]["own_goal"]["auroc"] == 0.9
    table = "\n".join(group_lines([{"name": "adapted", "metrics": {"groups": macros}}]))
    assert "| held out | 2 | 0.700 / 1.000 / 0.500 |" in table


def test_evaluate_scores_held_out_goals_as_new_goals_and_groups_them(tmp_path):
    from vlmr.calibrate.evaluate import EvaluateConfig, EvaluatedModel, evaluate
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    from vlmr.core.dataset import load_split_arrays, seen_goals
    from vlmr.core.metrics import ranking_metrics

    held = ["go to the red ball", "go to the blue key"]
    data = collect(CollectConfig(name="h", source="babyai", env_id="BabyAI-GoToLocal-v0", out_dir=str(tmp_path / "d"),
                                 frames=SplitFrames(train=100, val=100, test=300), shard_size=100,
                                 holdout_goals=held, min_positives_per_split=2, max_topup_ratio=4.0), progress=False)
    import json

    manifest = json.loads((data / "manifest.json").read_text())
    seen = seen_goals(manifest)  # goals short of positives may be dropped from the set
    assert set(held) <= set(manifest["goals"]) and set(seen) == set(manifest["goals"]) - set(held)
    model = RewardModel.create("vlmr-tiny", seen, negatives=["a grey wall"]).save(tmp_path / "rm")
    res = evaluate(EvaluateConfig(models=[EvaluatedModel(dir=str(model), name="m")], data=str(data)), progress=False)
    (m,) = res["models"]
    assert m["new_goals"] == held and set(m["metrics"]["per_goal"]) == set(seen) | set(held)
    assert m["metrics"]["groups"]["held out"]["goals"] == 2 and m["metrics"]["groups"]["seen"]["goals"] == len(seen)
    # the held-out goals' figures are those of the model with the goals added at load, frame by frame
    rm = RewardModel.load(model, goals=seen + held)
    arrays = load_split_arrays(data, "test", goals=seen + held)
    probs = rm.all_probs(arrays.frames)
    for g in held:
        k = (seen + held).index(g)
        expected = ranking_metrics(probs[:, k], torch.as_tensor(arrays.labels[:, k]))["auroc"]
        assert expected is not None
        assert m["metrics"]["per_goal"][g]["all"]["auroc"] == pytest.approx(expected, abs=1e-5)


def test_agents_train_on_held_out_goals_their_reward_model_scores_as_new_goals(tmp_path):
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent.ppo import PPOConfig, train
    from vlmr.rl.envs.babyai import goal_set

    seen = [g for g in goal_set("BabyAI-GoToObj-v0") if g not in SUBSET]
    model = RewardModel.create("vlmr-tiny", seen).save(tmp_path / "rm")
    result = train(PPOConfig(env_id="BabyAI-GoToObj-v0", env_kwargs={"goals": SUBSET}, reward_model=str(model),
                             total_timesteps=256, num_envs=4, num_steps=64, eval_episodes=4, final_eval_episodes=4,
                             actions=["left", "right", "forward"], progress=False, logger="none",
                             out_dir=str(tmp_path / "run")))
    assert result["env_steps"] == 256 and result["goal_source"].startswith("text:")


def test_open_vocab_chain_config_loads_and_a_paraphrase_without_slots_is_refused_at_load(tmp_path):
    from vlmr.rl.experiments.pipeline import PipelineConfig

    from vlmr.core.config import load_config

    cfg = load_config(PipelineConfig, "babyai_open_vocab")
    assert cfg.domain.set["holdout_goals"] == "one_in_three_pairs" and cfg.compare.set["goals"] == "holdout"
    with pytest.raises(VlmrError, match=r"must name \{color\} and \{type\}"):
        load_config(PipelineConfig, "babyai_open_vocab", ["paraphrases=[stand in front of it]"])
