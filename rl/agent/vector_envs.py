"""Environments for PPO: vector envs of any registered environment family (vlmr.rl.envs), and their missions.

    envs = make_vector_env("BabyAI-GoToRedBallNoDists-v0", 8, AutoresetMode.DISABLED, image_size=112)
    envs = make_vector_env("vlmr/CrafterGoal-v0", 8, AutoresetMode.DISABLED, obs_mode="pixels",
                           env_kwargs={"goals": ["collect wood"], "max_steps": 100})
    missions(envs)                        # canonical goal sentence of each sub-env's episode

Every sub-env comes from its family's `make_env`: obs is the policy's view (obs_mode), render() the
reward model's frame at image_size. The family is found by env id (vlmr.rl.envs.env_family), so a
new family needs no change here.
"""

from __future__ import annotations

import functools

from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from vlmr.rl.envs import env_family


def action_names(env_id: str) -> list[str]:
    """The env's actions by name, in action-id order (what PPOConfig.actions selects from)."""
    return env_family(env_id).action_names(env_id)


def env_goal_set(env_id: str, env_kwargs: dict | None = None) -> list[str] | None:
    """The goal sentences of env_id's missions; None when its family labels no goal set for it."""
    return env_family(env_id).goal_set(env_id, env_kwargs)


def missions(envs) -> list[str]:
    """Each sub-env's goal sentence, canonical ('go to a red ball' -> 'go to the red ball') where it has one."""
    canonical = env_family(envs.metadata["env_id"]).canonical_mission
    return [canonical(m) or m for m in envs.get_attr("mission")]


def make_vector_env(env_id: str, num_envs: int, autoreset_mode: AutoresetMode, image_size: int = 64,
                    obs_mode: str = "symbolic", vector: str = "sync", memo_render: bool = True,
                    env_kwargs: dict | None = None):
    """num_envs sub-envs of env_id with the given autoreset mode; observations as the policy sees them."""
    family = env_family(env_id)
    family.check_env(env_id, obs_mode, env_kwargs)  # here, not in async workers: the error reaches the caller
    thunk = functools.partial(family.make_env, env_id, image_size, obs_mode, env_kwargs, memo_render)
    cls = AsyncVectorEnv if vector == "async" else SyncVectorEnv
    envs = cls([thunk] * num_envs, autoreset_mode=autoreset_mode)
    envs.metadata["env_id"] = env_id  # for missions(): wrappers such as VLMReward copy metadata
    return envs
