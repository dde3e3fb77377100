"""PPO's environments: the render memo is exact, policy observations, canonical missions, quiet resets, async."""

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from vlmr.rl.agent.vector_envs import make_vector_env, missions
from vlmr.rl.envs.babyai import MemoRender, make_env, render_frame


@pytest.mark.parametrize("env_id", ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0", "BabyAI-OpenDoorColor-v0"])
def test_memo_render_returns_exactly_the_fresh_frame(env_id):
    MemoRender.memo.clear()
    MemoRender.used_bytes = 0
    env = make_env(env_id, image_size=64, memo_render=True)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    hits = 0
    for _ in range(300):  # turning, walking, picking up, toggling doors: views repeat and change
        _, _, term, trunc, _ = env.step(int(rng.integers(0, 6)))
        if term or trunc:
            env.reset()
        size = len(MemoRender.memo)
        frame = env.render()
        hits += len(MemoRender.memo) == size
        np.testing.assert_array_equal(frame, render_frame(env.unwrapped, 64))
    assert hits > 30  # the memo was actually used


def test_vector_env_observations_and_missions(capsys):
    envs = make_vector_env("BabyAI-GoToLocal-v0", 3, AutoresetMode.SAME_STEP, obs_mode="symbolic")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 7, 7, 3) and obs.dtype == np.uint8
    assert all(m.startswith("go to the ") for m in missions(envs))  # "go to a red ball" -> "go to the red ball"
    for _ in range(20):
        envs.step(np.zeros(3, dtype=np.int64))
    assert "Sampling rejected" not in capsys.readouterr().out
    envs.close()
    pix = make_vector_env("BabyAI-GoToObj-v0", 2, AutoresetMode.SAME_STEP, obs_mode="pixels")
    assert pix.reset(seed=0)[0].shape == (2, 56, 56, 3)
    pix.close()


@pytest.mark.parametrize("env_id,obs_mode", [("BabyAI-GoToLocal-v0", "symbolic"), ("vlmr/CrafterGoal-v0", "pixels")])
def test_async_vector_env_gives_the_sync_observations_and_frames(env_id, obs_mode):
    runs = {}
    for vector in ("sync", "async"):
        envs = make_vector_env(env_id, 2, AutoresetMode.SAME_STEP, image_size=48, obs_mode=obs_mode, vector=vector)
        obs, _ = envs.reset(seed=[3, 4])
        seen = [(obs, np.stack(envs.call("render")), missions(envs))]
        for action in (2, 0, 2, 1):
            obs = envs.step(np.full(2, action))[0]
            seen.append((obs, np.stack(envs.call("render")), missions(envs)))
        envs.close()
        runs[vector] = seen
    for (obs, frames, goals), (a_obs, a_frames, a_goals) in zip(runs["sync"], runs["async"]):
        np.testing.assert_array_equal(obs, a_obs)
        np.testing.assert_array_equal(frames, a_frames)
        assert goals == a_goals
    assert frames.shape == (2, 48, 48, 3) and not np.array_equal(runs["sync"][0][0][0], runs["sync"][0][0][1])
