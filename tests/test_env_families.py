"""Environment families: every registered family implements the interface, lookups fail with what exists,
and a new family (this module is a toy one) works in collection and PPO's vector envs by registration alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from vlmr.rl.agent import vector_envs
from vlmr.rl.agent.vector_envs import make_vector_env, missions
from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect
from vlmr.rl.envs import FAMILIES, INTERFACE, env_family, family

from vlmr.core.dataset import iter_split, read_manifest
from vlmr.core.errors import VlmrError


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_implements_the_interface(name):
    module = family(name)
    missing = [f for f in INTERFACE if not hasattr(module, f)]
    assert not missing, f"{name} lacks {missing}"
    assert module.NAME == name and isinstance(module.ENV_ID_PREFIXES, tuple)
    assert all(callable(getattr(module, f)) for f in INTERFACE if f not in ("NAME", "ENV_ID_PREFIXES"))
    for prefix in module.ENV_ID_PREFIXES:
        assert env_family(prefix + "X") is module


def test_lookups_name_what_exists():
    with pytest.raises(VlmrError, match="sources are shapes, babyai, crafter"):
        family("gridworld")
    with pytest.raises(VlmrError, match=r"unknown env_id 'Atari-Pong'.*babyai: BabyAI-\*, MiniGrid-\*; crafter: vlmr/Crafter\*"):
        env_family("Atari-Pong")
    with pytest.raises(VlmrError, match="shapes has no RL env"):
        family("shapes").make_env("shapes")


def test_families_answer_for_their_env_ids():
    assert vector_envs.action_names("vlmr/CrafterGoal-v0")[:2] == ["noop", "move_left"]
    assert vector_envs.action_names("BabyAI-GoToObj-v0")[:3] == ["left", "right", "forward"]
    assert vector_envs.env_goal_set("vlmr/CrafterGoal-v0", {"goals": ["place a table"]}) == ["place a table"]
    assert len(vector_envs.env_goal_set("BabyAI-GoToObj-v0")) == 18
    assert vector_envs.env_goal_set("MiniGrid-Empty-5x5-v0") is None
    assert family("babyai").canonical_mission("go to a red ball") == "go to the red ball"
    assert family("crafter").canonical_mission("eat cow") is None


# ------------------------------------------------------------------ a toy third family: this module
NAME = "toy"
ENV_ID_PREFIXES = ("Toy-",)
GOALS = ["light the lamp"]


class LampEnv(gym.Env):
    """Action 1 lights the lamp (reward 1, terminated); render() is white when lit, black when not."""

    def __init__(self, image_size: int = 8):
        self.image_size, self.lit, self.mission = image_size, False, "light the lamp"
        self.observation_space = gym.spaces.Box(0, 255, (2, 2, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.lit = False
        return self.render()[:2, :2], {}

    def step(self, action):
        self.lit = self.lit or int(action) == 1
        return self.render()[:2, :2], float(self.lit), self.lit, False, {}

    def render(self):
        return render_frame(self, self.image_size)


def check_env(env_id, obs_mode=None, env_kwargs=None):
    if env_kwargs:
        raise VlmrError(f"{env_id} takes no env_kwargs")


def make_env(env_id, image_size=64, obs_mode=None, env_kwargs=None, memo_render=False):
    return LampEnv(image_size)


def goal_set(env_id=None, env_kwargs=None):
    return list(GOALS)


def label_goals(env, goals):
    return {g: int(env.lit) for g in goals}


def state_meta(env, goals, rng):
    return {"labels": label_goals(env, goals), "captions": ["a lit lamp" if env.lit else "a dark room"]}


def render_frame(env, image_size=64):
    return np.full((image_size, image_size, 3), 255 if env.lit else 0, np.uint8)


def canonical_mission(mission):
    return mission if mission in GOALS else None


def action_names(env_id=None):
    return ["wait", "switch"]


class LampSource:
    goals, view = GOALS, None

    def episode(self, env_seed):
        env = LampEnv(8)
        env.reset(seed=env_seed)
        for action in (0, 1):
            env.step(action)
            yield env.render(), {"env": "Toy-Lamp", "mission": env.mission, **state_meta(env, GOALS, None)}


def make_source(cfg):
    return LampSource()


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(FAMILIES, NAME, __name__)  # the one registry line a new family adds


def test_toy_family_collects_through_the_registry(toy, tmp_path):
    out = collect(CollectConfig(name="lamp", source="toy", out_dir=str(tmp_path / "lamp"), image_size=8,
                                frames=SplitFrames(train=4, val=2, test=2), shard_size=4), progress=False)
    manifest = read_manifest(out)
    assert manifest["source"] == "toy" and manifest["goals"] == GOALS and manifest["splits"]["train"]["samples"] == 4
    labels = [s["meta"]["labels"]["light the lamp"] for s in iter_split(out, "train")]
    assert labels == [0, 1, 0, 1]  # each episode: wait (dark), then switch (lit)


def test_toy_family_runs_in_the_vector_env(toy):
    envs = make_vector_env("Toy-Lamp", 2, AutoresetMode.SAME_STEP, image_size=8, obs_mode="pixels")
    envs.reset(seed=0)
    assert missions(envs) == ["light the lamp"] * 2
    _, reward, terminated, _, _ = envs.step(np.array([0, 1]))
    assert reward.tolist() == [0.0, 1.0] and terminated.tolist() == [False, True]
    with pytest.raises(VlmrError, match="takes no env_kwargs"):
        make_vector_env("Toy-Lamp", 1, AutoresetMode.SAME_STEP, env_kwargs={"x": 1})
