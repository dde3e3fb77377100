"""Environment families, each a module with the same interface; the registry finds them by name or env id.

    from vlmr.rl.envs import family, env_family
    family("crafter").make_source(collect_cfg)             # `vlmr collect` with source: crafter
    env_family("BabyAI-GoToLocal-v0").make_env("BabyAI-GoToLocal-v0", 64, "symbolic")   # one PPO sub-env

The interface (every family module defines all of these; tests/test_env_families.py checks it):

  NAME                     the family's name, collect's `source`
  ENV_ID_PREFIXES          the PPO env ids it owns ("BabyAI-", "MiniGrid-"); () for a data-only family
  check_env(env_id, obs_mode, env_kwargs)
                           VlmrError for an env id, observation mode or env options the family cannot make
  make_env(env_id, image_size=64, obs_mode=..., env_kwargs=None, memo_render=False)
                           a gymnasium env: obs is the policy's view (obs_mode), render() the reward model's
                           frame (uint8 image_size x image_size x 3); memo_render: reuse frames where exact
  goal_set(env_id, env_kwargs=None)
                           the goal sentences of env_id's missions (None: the family labels no goal set for it)
  label_goals(env, goals)  {goal: 0/1} ground truth from the env's state
  state_meta(env, goals, rng)
                           {"labels", "captions"} of an RL env's current state: what a frame is stored with,
                           by `vlmr collect` and by the rollout recorder alike
  render_frame(env, image_size)
                           the reward model's frame of the env's current state
  canonical_mission(mission)
                           the goal-set sentence of an episode's mission; None when it is outside every goal set
  action_names(env_id)     the env's actions by name, in action-id order
  make_source(cfg)         the `vlmr collect` data source for a CollectConfig: `.goals`, `.view` and
                           `.episode(env_seed)` yielding (frame, {"env", "mission", "labels", "captions"})

A new family is one module implementing the interface plus one line in FAMILIES.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vlmr.core.errors import VlmrError

# family name -> module. Modules are imported on first use: minigrid and crafter are slow to import.
FAMILIES = {
    "shapes": "vlmr.rl.envs.shapes",
    "babyai": "vlmr.rl.envs.babyai",
    "crafter": "vlmr.rl.envs.crafter",
}
INTERFACE = ("NAME", "ENV_ID_PREFIXES", "check_env", "make_env", "goal_set", "label_goals", "state_meta",
             "render_frame", "canonical_mission", "action_names", "make_source")


def family(name: str) -> ModuleType:
    """The family module registered as `name` (collect's `source`)."""
    if name not in FAMILIES:
        raise VlmrError(f"unknown data source {name!r}; sources are {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def env_family(env_id: str) -> ModuleType:
    """The family module whose ENV_ID_PREFIXES match env_id (PPO's env side)."""
    owners = {name: family(name).ENV_ID_PREFIXES for name in FAMILIES}
    for name, prefixes in owners.items():
        if env_id.startswith(tuple(prefixes)):
            return family(name)
    known = "; ".join(f"{name}: {', '.join(x + '*' for x in p)}" for name, p in owners.items() if p)
    raise VlmrError(f"unknown env_id {env_id!r}: no environment family owns it ({known})")


def no_rl_env(name: str, what: str) -> VlmrError:
    """The error of a data-only family asked for an RL env."""
    return VlmrError(f"{name} has no RL env ({what} needs one); it is a data source for `vlmr collect` only")
