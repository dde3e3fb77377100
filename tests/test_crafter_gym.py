"""vlmr/CrafterGoal-v0: seeded worlds, ground-truth success from the frame labels, truncation, and PPO on it."""

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vlmr.finetune.reward_model import RewardModel
from vlmr.rl.agent.policy import GoalLookup, evaluate
from vlmr.rl.agent.ppo import PPOConfig, train
from vlmr.rl.agent.vector_envs import make_vector_env, missions
from vlmr.rl.envs.crafter import ScriptedPolicy
from vlmr.rl.envs.crafter_gym import CrafterGoalEnv

from vlmr.core.errors import VlmrError

NOOP = 0


def test_reset_seed_gives_the_same_world_and_goal():
    env = CrafterGoalEnv(goals=["collect wood", "place a table"], max_steps=5)
    a, b = env.reset(seed=3)[0], env.reset(seed=3)[0]
    mission = env.mission
    assert np.array_equal(a, b) and env.reset(seed=3)[1]["mission"] == mission
    others = [env.reset(seed=s)[0] for s in range(4, 8)]
    assert any(not np.array_equal(a, o) for o in others)  # other seeds, other worlds
    assert {env.reset(seed=s)[1]["mission"] for s in range(40)} == {"collect wood", "place a table"}


def test_success_death_and_truncation():
    env = CrafterGoalEnv(goals=["collect wood"], max_steps=3)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(NOOP)
    assert (reward, terminated, truncated) == (0.0, False, False)
    env._env._player.inventory["wood"] = 1  # the frame now shows wood in the inventory bar: the goal's label
    _, reward, terminated, truncated, info = env.step(NOOP)
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)

    env.reset(seed=0)
    env._env._player.health = 0
    _, reward, terminated, truncated, info = env.step(NOOP)
    assert (reward, terminated, info["dead"]) == (0.0, True, True)

    env.reset(seed=0)
    ends = [env.step(NOOP)[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (False, True)]


class ScriptedAgent:
    """Plays rl/envs/crafter.py's scripted policy without noise in every sub-env: it walks to a tree and
    collects wood. An oracle for `evaluate`; the constant no-op agent never collects anything."""

    def __init__(self, envs, noop: bool = False):
        self.noop = noop
        self.policies = [ScriptedPolicy(e.unwrapped._env, np.random.default_rng(i), noise=0.0)
                         for i, e in enumerate(envs.envs)]

    def get_action_and_value(self, obs, goals, greedy=False):
        actions = [NOOP if self.noop else policy() for policy in self.policies]
        return torch.tensor(actions), None, None, None


def test_success_is_reached_by_a_scripted_player_and_never_by_a_still_one():
    envs = make_vector_env("vlmr/CrafterGoal-v0", 4, AutoresetMode.NEXT_STEP, obs_mode="pixels",
                           env_kwargs={"goals": ["collect wood"], "max_steps": 60})
    lookup, action_ids = GoalLookup(["collect wood"], "onehot"), np.arange(17)
    assert evaluate(ScriptedAgent(envs), envs, lookup, list(range(4)), action_ids, "cpu") == 1.0
    assert evaluate(ScriptedAgent(envs, noop=True), envs, lookup, list(range(4)), action_ids, "cpu") == 0.0
    envs.close()


def test_render_is_the_reward_models_view_at_its_size():
    env = CrafterGoalEnv(image_size=96)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and env.render().shape == (96, 96, 3)
    same = CrafterGoalEnv(image_size=64)
    assert np.array_equal(same.reset(seed=0)[0], same.render())


def test_vector_env_errors_name_the_fix():
    with pytest.raises(VlmrError, match="obs_mode=pixels"):
        make_vector_env("vlmr/CrafterGoal-v0", 2, AutoresetMode.SAME_STEP, obs_mode="symbolic")
    with pytest.raises(VlmrError, match=r"env_kwargs \['colour'\] unknown"):
        make_vector_env("vlmr/CrafterGoal-v0", 2, AutoresetMode.SAME_STEP, obs_mode="pixels", env_kwargs={"colour": 1})
    with pytest.raises(VlmrError, match="unknown goals"):
        make_vector_env("vlmr/CrafterGoal-v0", 1, AutoresetMode.SAME_STEP, obs_mode="pixels",
                        env_kwargs={"goals": ["eat cow"]})
    with pytest.raises(VlmrError, match=r"env_kwargs goals \['x'\]: not missions of BabyAI-GoToObj-v0"):
        make_vector_env("BabyAI-GoToObj-v0", 1, AutoresetMode.SAME_STEP, env_kwargs={"goals": ["x"]})
    with pytest.raises(VlmrError, match=r"env_kwargs \['max_steps'\]: BabyAI-GoToObj-v0 takes only \['goals', 'view'\]"):
        make_vector_env("BabyAI-GoToObj-v0", 1, AutoresetMode.SAME_STEP, env_kwargs={"max_steps": 3})
    with pytest.raises(ValueError, match="unknown actions"):
        PPOConfig(env_id="vlmr/CrafterGoal-v0", actions=["forward"])


CRAFTER_TINY = dict(env_id="vlmr/CrafterGoal-v0", obs_mode="pixels", total_timesteps=64, num_envs=2, num_steps=32,
                    eval_episodes=2, final_eval_episodes=2, env_kwargs={"goals": ["collect wood"], "max_steps": 20},
                    actions=["move_left", "move_right", "move_up", "move_down", "do"], progress=False)


def test_ppo_on_crafter_ground_truth_and_vlm_reward(tmp_path):
    gt = train(PPOConfig(**CRAFTER_TINY, goal_encoding="onehot", out_dir=str(tmp_path / "gt")))
    assert gt["env_steps"] == 64 and gt["final_success_rate"] in (0.0, 0.5, 1.0)  # 2 final episodes

    torch.manual_seed(0)
    rm = str(RewardModel.create("vlmr-tiny", ["collect wood", "place a table"]).save(tmp_path / "rm"))
    vlm = train(PPOConfig(**CRAFTER_TINY, reward_model=rm, out_dir=str(tmp_path / "vlm")))
    q = vlm["reward_quality"]
    assert q["tp"] + q["fp"] + q["fn"] + q["tn"] == 64 and vlm["cache"]["frames"] == 64
    envs = make_vector_env("vlmr/CrafterGoal-v0", 2, AutoresetMode.SAME_STEP, obs_mode="pixels")
    envs.reset(seed=0)
    assert missions(envs) == ["collect wood", "collect wood"]
