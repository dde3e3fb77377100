"""Environments for PPO: sub-envs that render the reward model's view, and policy observations.

    envs = make_vector_env("BabyAI-GoToRedBallNoDists-v0", 8, AutoresetMode.DISABLED, image_size=112)
    envs = make_vector_env("vlmr/CrafterGoal-v0", 8, AutoresetMode.DISABLED, obs_mode="pixels",
                           env_kwargs={"goals": ["collect wood"], "max_steps": 100})
    missions(envs)                        # canonical goal sentence of each sub-env's episode

- `make_base_env`: vlmr.rl.envs.babyai.make_env for BabyAI ids (render() = the egocentric
  frame at image_size, the view the reward model was trained on); any other
  MiniGrid id gets the same render through vlmr.rl.envs.babyai.render_frame.
- `MemoRender`: exact memo of those frames (grid worlds repeat views a lot).
- `PolicyObs`: the policy's input, symbolic grid encoding or egocentric pixels.
- Crafter (`vlmr/CrafterGoal-v0`, rl/envs/crafter_gym.py): pixels only; its obs is the policy's
  64 px view and render() the reward model's.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections import OrderedDict

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from vlmr.core.errors import VlmrError

ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")  # MiniGrid's Actions, in order


def is_crafter(env_id: str) -> bool:
    return env_id.startswith("vlmr/Crafter")


def action_names(env_id: str) -> list[str]:
    """The env's actions by name, in action-id order (what PPOConfig.actions selects from)."""
    if is_crafter(env_id):
        from vlmr.rl.envs.crafter_gym import action_names as crafter_actions

        return crafter_actions()
    return list(ACTION_NAMES)


class PolicyObs(gym.ObservationWrapper):
    """The policy's view of a MiniGrid obs dict: the symbolic 7x7x3 encoding, or the egocentric RGB view."""

    def __init__(self, env, obs_mode: str, tile_size: int = 8):
        super().__init__(env)
        self.obs_mode, self.tile_size = obs_mode, tile_size
        if obs_mode == "symbolic":
            self.observation_space = env.observation_space["image"]
        else:
            side = env.unwrapped.agent_view_size * tile_size
            self.observation_space = gym.spaces.Box(0, 255, (side, side, 3), np.uint8)

    def observation(self, obs):
        if self.obs_mode == "symbolic":
            return obs["image"]
        return self.env.unwrapped.get_frame(highlight=False, tile_size=self.tile_size, agent_pov=True)


class MemoRender(gym.Wrapper):
    """render() memoised on what minigrid draws the egocentric frame from: the view grid and its visibility.

    The key is the full encoding (type, colour, state of every cell, hidden ones too, and the carried
    object) of `gen_obs_grid()`'s view plus the visibility mask, so equal keys mean equal frames; it
    costs ~0.1 ms against ~0.25 ms for drawing. One LRU table per process, shared by its envs.
    """

    memo: OrderedDict = OrderedDict()
    max_bytes = 128 << 20  # ~10000 frames at 64 px, ~3500 at 112 px
    used_bytes = 0

    def __init__(self, env, image_size: int):
        super().__init__(env)
        self.image_size = image_size

    def render(self):
        grid, vis = self.env.unwrapped.gen_obs_grid()
        key = (self.image_size, grid.encode().tobytes(), vis.tobytes())
        frame = self.memo.get(key)
        if frame is None:
            frame = np.asarray(self.env.render())
            frame.setflags(write=False)  # shared between calls
            cls = type(self)
            cls.memo[key] = frame
            cls.used_bytes += frame.nbytes
            while cls.used_bytes > cls.max_bytes and len(cls.memo) > 1:
                cls.used_bytes -= cls.memo.popitem(last=False)[1].nbytes
        else:
            self.memo.move_to_end(key)
        return frame


class QuietReset(gym.Wrapper):
    """minigrid prints a "Sampling rejected" line for every rejected layout on reset; keep stdout clean."""

    def reset(self, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            return self.env.reset(**kwargs)


def make_base_env(env_id: str, image_size: int, memo_render: bool = True) -> gym.Env:
    """An env whose render() is the agent's egocentric frame at image_size, the view the reward model saw in data.

    BabyAI ids go through vlmr.rl.envs.babyai.make_env; other MiniGrid ids get the same render (vlmr.rl.envs.babyai.render_frame).
    """
    from vlmr.rl.envs.babyai import make_env, render_frame

    if env_id.startswith("BabyAI-"):
        env = make_env(env_id, view="egocentric", image_size=image_size)
    else:
        class _EgocentricRender(gym.Wrapper):
            def render(self):
                return render_frame(self.env.unwrapped, "egocentric", image_size)

        env = _EgocentricRender(gym.make(env_id))
    env = QuietReset(env)
    return MemoRender(env, image_size) if memo_render else env


def missions(envs) -> list[str]:
    """Each sub-env's goal sentence, canonical ('go to a red ball' -> 'go to the red ball') where it parses."""
    from vlmr.rl.envs.babyai import canonical_mission

    return [canonical_mission(m) or m for m in envs.get_attr("mission")]


def env_goal_set(env_id: str, env_kwargs: dict | None = None) -> list[str] | None:
    if is_crafter(env_id):
        from vlmr.rl.envs.crafter_gym import DEFAULT_GOALS, check_goals

        return check_goals((env_kwargs or {}).get("goals") or DEFAULT_GOALS)
    try:
        from vlmr.rl.envs.babyai import goal_set

        return list(goal_set(env_id))
    except (ImportError, VlmrError, KeyError, ValueError):
        return None


def make_vector_env(env_id: str, num_envs: int, autoreset_mode: AutoresetMode, image_size: int = 64,
                    obs_mode: str = "symbolic", vector: str = "sync", memo_render: bool = True,
                    env_kwargs: dict | None = None):
    """num_envs sub-envs of env_id with the given autoreset mode; observations as the policy sees them."""
    import minigrid  # noqa: F401  (registers the MiniGrid and BabyAI ids)
    import vlmr.rl.envs.crafter_gym  # noqa: F401  (registers vlmr/CrafterGoal-v0)

    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise VlmrError(f"unknown env_id {env_id!r} ({e})") from None
    if is_crafter(env_id) and obs_mode != "pixels":
        raise VlmrError(f"{env_id} has no symbolic observation: set obs_mode=pixels")
    if env_kwargs and not is_crafter(env_id):
        raise VlmrError(f"env_kwargs {sorted(env_kwargs)} are for vlmr/CrafterGoal-v0; {env_id} takes none")

    if is_crafter(env_id):
        from vlmr.rl.envs.crafter_gym import CrafterGoalEnv

        allowed = set(inspect.signature(CrafterGoalEnv).parameters) - {"image_size", "render_mode"}
        unknown = sorted(set(env_kwargs or {}) - allowed)
        if unknown:
            raise VlmrError(f"env_kwargs {unknown} unknown to {env_id}; it takes {sorted(allowed)}")

    def thunk():
        if is_crafter(env_id):
            return CrafterGoalEnv(image_size=image_size, **(env_kwargs or {}))
        return PolicyObs(make_base_env(env_id, image_size, memo_render), obs_mode)
    cls = AsyncVectorEnv if vector == "async" else SyncVectorEnv
    return cls([thunk] * num_envs, autoreset_mode=autoreset_mode)
