"""Agents on a goal subset (e.g. the held-out goals): BabyAI episodes drawn only for those missions."""

import numpy as np
import pytest
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
