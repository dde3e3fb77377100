"""Crafter as a goal-conditioned gymnasium env for PPO: one achievement goal per episode, ground-truth success.

    import vlmr.rl.envs.crafter_gym  # registers the id (vlmr.rl.envs.crafter.make_env builds it directly)
    env = gym.make("vlmr/CrafterGoal-v0", goals=["collect wood"], max_steps=100, image_size=64)
    obs, info = env.reset(seed=0); env.unwrapped.mission          # 'collect wood'
    vlmr compare configs/rl/compare_crafter.yaml                  # agents on it (vlmr pipeline wires the models)

Success is the frame-decidable label of rl/envs/crafter.py (the rules the data was
labelled with): the episode terminates with reward 1 on the first step whose frame
shows the goal ("collect wood": wood in the inventory bar). The player dying
terminates it with 0; `max_steps` truncates it. Every reset draws a fresh world from
the env's seeded RNG, so `reset(seed=s)` always gives the same world and goal.
Worlds are 32 x 32 cells by default (`area`; crafter's own is 64) to keep resets cheap.

obs is the 64 px frame the policy sees; render() is the same view at `image_size`,
the reward model's input (one draw when the sizes agree).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from vlmr.rl.envs.crafter import DEFAULT_GOALS, ENV_ID, check_goals, label_goals, make_reproducible, reseed

from vlmr.core.errors import VlmrError


class CrafterGoalEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, goals=DEFAULT_GOALS, max_steps: int = 100, area: int = 32, image_size: int = 64,
                 obs_size: int = 64, render_mode: str = "rgb_array"):
        import crafter

        self.goals = check_goals(goals)
        if max_steps < 1:
            raise VlmrError(f"{ENV_ID}: max_steps must be >= 1, got {max_steps}")
        self.max_steps, self.image_size, self.render_mode = max_steps, image_size, render_mode
        # crafter's own episode length is never reached: this env truncates at max_steps first
        # area: crafter's 64 x 64 world takes ~0.3 s per reset (pure-Python simplex noise), 32 x 32 a quarter
        # of that; the world near the player is generated the same way and a short episode stays near it
        make_reproducible()
        self._env = crafter.Env(area=(area, area), size=(obs_size, obs_size), length=max_steps + 1, seed=0)
        self.action_space = gym.spaces.Discrete(len(crafter.constants.actions))
        self.observation_space = gym.spaces.Box(0, 255, (obs_size, obs_size, 3), np.uint8)
        self.mission, self._steps, self._obs = self.goals[0], 0, None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        # crafter draws its world from hash((seed, episode)): reseeding each episode from our RNG makes
        # gymnasium's reset(seed=...) contract hold (same seed, same world)
        world_seed = int(self.np_random.integers(2**31))
        self.mission = self.goals[int(self.np_random.integers(len(self.goals)))]
        self._obs, self._steps = reseed(self._env, world_seed), 0
        return self._obs, {"mission": self.mission}

    def step(self, action):
        self._obs, _, crafter_done, info = self._env.step(int(action))
        self._steps += 1
        success = bool(label_goals(self._env, [self.mission])[self.mission])
        dead = crafter_done and self._env._player.health <= 0
        terminated = success or dead
        truncated = not terminated and self._steps >= self.max_steps
        return self._obs, float(success), terminated, truncated, {"success": success, "dead": dead}

    def render(self):
        if self._obs is not None and self.image_size == self._obs.shape[0]:
            return self._obs
        return self._env.render((self.image_size, self.image_size))


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=CrafterGoalEnv)
