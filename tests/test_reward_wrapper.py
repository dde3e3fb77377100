"""VLMReward: batched rewards equal per-env rewards, the cache, termination and autoreset semantics, bad input."""

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI ids)
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from vlmr.finetune.reward_model import RewardModel
from vlmr.rl.agent.reward_wrapper import FrameCache, VLMReward
from vlmr.rl.envs.babyai_goals import family_goals

from vlmr.core.errors import VlmrError

ENV_ID = "BabyAI-GoToObj-v0"  # one object per room, missions "go to the {colour} {type}"


def babyai(render=True):
    def thunk():
        from vlmr.rl.envs.babyai import make_env

        return make_env(ENV_ID, image_size=64) if render else gym.make(ENV_ID)
    return thunk


def vector(n=3, mode=AutoresetMode.DISABLED, render=True):
    return SyncVectorEnv([babyai(render)] * n, autoreset_mode=mode)


@pytest.fixture(scope="module")
def prob_model():
    torch.manual_seed(0)  # reward_mode=prob gives continuous rewards, so equality checks mean something
    return RewardModel.create("vlmr-tiny", family_goals("goto"), reward_mode="prob")


class ScriptedModel:
    """A stand-in reward model: fires for the env indices listed in `fire` on the next call."""

    def __init__(self, goals):
        self.goals = list(goals)
        self.spec = type("Spec", (), {"reward_mode": "binary"})()
        self.thresholds = torch.full((len(goals),), 0.5)
        self.fire: set[int] = set()
        self.calls = 0

    def goal_index(self, goals):
        missing = [g for g in goals if g not in self.goals]
        if missing:
            raise VlmrError(f"goal {missing[0]!r} is not in this reward model's goal set")
        return torch.tensor([self.goals.index(g) for g in goals])

    def reward(self, frames, goal_ids):
        self.calls += 1
        out = torch.zeros(len(frames))
        out[list(self.fire)] = 1.0
        self.fire = set()
        return out


def test_batched_rewards_equal_per_env_rewards(prob_model):
    envs = VLMReward(vector(4), prob_model)
    envs.reset(seed=0)
    rng, checked = np.random.default_rng(0), 0
    for _ in range(5):
        actions = rng.integers(0, 3, 4)
        _, reward, term, trunc, info = envs.step(actions)
        # the frames the wrapper scored are the sub-envs' renders after the step (no env finished here)
        if (term | trunc).any():
            continue
        frames_before = np.stack(envs.env.call("render"))
        missions = envs.env.get_attr("mission")
        single = [prob_model.reward(frames_before[i:i + 1], [missions[i]]).item() for i in range(4)]
        np.testing.assert_allclose(reward, single, rtol=1e-4, atol=1e-6)
        assert np.all((reward > 0) & (reward < 1))
        assert info["vlm_reward"].shape == (4,) and info["_vlm_reward"].all()
        checked += 1
    assert checked >= 3
    envs.close()


def test_cache_gives_the_same_rewards_and_counts_hits(prob_model):
    actions = [0, 0, 0, 0, 1, 1, 1, 1]  # turning in place: the fifth view repeats the first
    rewards = {}
    for cache_size in (0, 1000):
        envs = VLMReward(vector(2), prob_model, cache_size=cache_size, terminate_on_reward=False)
        envs.reset(seed=3)
        rewards[cache_size] = [envs.step(np.array([a, a]))[1] for a in actions]
        stats = envs.cache_stats
        envs.close()
    np.testing.assert_allclose(rewards[0], rewards[1000], rtol=1e-5, atol=1e-6)
    assert stats["frames"] == 16
    assert stats["hits"] >= 8  # after 4 left turns every view has been seen
    assert stats["model_frames"] == 16 - stats["hits"]


def test_frame_cache_is_lru():
    cache = FrameCache(2)
    a, b, c = (np.full((4, 4, 3), v, np.uint8) for v in (1, 2, 3))
    ka, kb, kc = ((FrameCache.frame_key(f), 0) for f in (a, b, c))
    cache.put(ka, 1.0)
    cache.put(kb, 2.0)
    assert cache.get(ka) == 1.0  # a is now the most recent
    cache.put(kc, 3.0)
    assert cache.get(kb) is None and cache.get(ka) == 1.0 and cache.get(kc) == 3.0
    assert FrameCache.frame_key(a) != FrameCache.frame_key(a.reshape(8, 2, 3))  # shape is part of the key


@pytest.mark.parametrize("mode", [AutoresetMode.DISABLED, AutoresetMode.NEXT_STEP])
def test_terminate_on_reward_resets_only_that_env(mode):
    model = ScriptedModel(family_goals("goto"))
    envs = VLMReward(vector(3, mode), model)
    obs, _ = envs.reset(seed=0)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _, _, _, _ = envs.step(np.array([0, 0, 0]))
    before = [u.unwrapped.step_count for u in envs.env.envs]
    model.fire = {1}
    obs, reward, term, trunc, info = envs.step(np.array([1, 1, 1]))
    assert reward.tolist() == [0.0, 1.0, 0.0]
    assert term.tolist() == [False, True, False] and not trunc.any()
    assert info["vlm_success"].tolist() == [False, True, False]
    assert not info["gt_success"].any() and info["gt_reward"].tolist() == [0.0, 0.0, 0.0]
    assert info["_final_obs"].tolist() == [False, True, False]
    assert info["final_obs"][1]["image"].shape == (7, 7, 3)
    steps = [u.unwrapped.step_count for u in envs.env.envs]
    assert steps == [before[0] + 1, 0, before[2] + 1]  # env 1 already reset (SAME_STEP), the others stepped
    np.testing.assert_array_equal(obs["image"][1], envs.env.envs[1].unwrapped.gen_obs()["image"])
    # the next step acts in env 1's new episode: no double reset, no assertion from the inner env
    obs, reward, term, trunc, _ = envs.step(np.array([2, 2, 2]))
    assert [u.unwrapped.step_count for u in envs.env.envs][1] == 1
    assert not term.any()
    envs.close()


def test_no_termination_when_disabled_and_env_success_is_ground_truth():
    model = ScriptedModel(family_goals("goto"))
    envs = VLMReward(vector(1), model, terminate_on_reward=False)
    envs.reset(seed=0)
    model.fire = {0}
    _, reward, term, _, info = envs.step(np.array([0]))
    assert reward[0] == 1.0 and not term[0] and info["vlm_success"][0]
    # put the agent next to its goal object, facing it: the env's own success is the ground truth
    u = envs.env.envs[0].unwrapped
    ox, oy = u.instrs.desc.obj_poss[0]
    for d, (dx, dy) in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)]):
        ax, ay = ox - dx, oy - dy
        if u.grid.get(ax, ay) is None:
            u.agent_pos, u.agent_dir = (ax, ay), d
            break
    _, reward, term, _, info = envs.step(np.array([6]))  # "done": GoTo succeeds when facing the object
    assert term[0] and info["gt_success"][0] and info["gt_reward"][0] > 0
    assert reward[0] == 0.0 and not info["vlm_success"][0]  # the VLM said no: a false negative, still terminated
    envs.close()


def test_works_on_any_env_that_renders_rgb():
    class Lamp(gym.Env):
        """Not MiniGrid: a lamp that is on after action 1. Renders 8x8 frames; its goal comes from mission_fn."""

        observation_space = gym.spaces.Discrete(2)
        action_space = gym.spaces.Discrete(2)
        render_mode = "rgb_array"

        def reset(self, *, seed=None, options=None):
            self.on = 0
            return 0, {}

        def step(self, action):
            self.on = int(action)
            return self.on, 0.0, False, False, {}

        def render(self):
            return np.full((8, 8, 3), 255 * self.on, np.uint8)

    class Brightness(ScriptedModel):
        def reward(self, frames, goal_ids):
            return torch.as_tensor(frames.reshape(len(frames), -1).mean(1) > 128, dtype=torch.float32)

    envs = VLMReward(SyncVectorEnv([Lamp, Lamp]), Brightness(["turn the lamp on"]),
                     mission_fn=lambda e: ["turn the lamp on"] * e.num_envs, cache_size=10)
    envs.reset(seed=0)
    obs, reward, term, _, info = envs.step(np.array([1, 0]))
    assert reward.tolist() == [1.0, 0.0] and term.tolist() == [True, False]
    assert obs.tolist() == [0, 0] and info["final_obs"][0] == 1  # env 0 was reset, its terminal obs kept
    envs.close()


def test_bad_input_errors(prob_model):
    with pytest.raises(VlmrError, match="SAME_STEP"):
        VLMReward(vector(1, AutoresetMode.SAME_STEP), prob_model)
    envs = VLMReward(vector(1, render=False), prob_model)  # plain gym.make: render_mode None
    with pytest.raises(VlmrError, match="cannot render"):
        envs.reset(seed=0)
    small = RewardModel.create("vlmr-tiny", ["go to the red ball"], negatives=["an empty room"])
    envs = VLMReward(vector(2), small)
    with pytest.raises(VlmrError, match="does not cover the env's missions"):
        envs.reset(seed=0)
    envs = VLMReward(vector(1), prob_model, mission_fn=lambda e: (_ for _ in ()).throw(AttributeError("mission")))
    with pytest.raises(VlmrError, match="mission_fn"):
        envs.reset(seed=0)
    gb = RewardModel.create("vlmr-tiny", family_goals("goto"), reward_mode="goal_baseline")
    with pytest.raises(VlmrError, match="success_threshold"):
        VLMReward(vector(1), gb)
