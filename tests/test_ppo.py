"""PPO: GAE and the loss pieces against hand-computed values, the agent, tiny end-to-end runs, bad input."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from vlmr.finetune.reward_model import RewardModel
from vlmr.rl.agent.policy import GoalLookup, evaluate
from vlmr.rl.agent.ppo import Agent, PPOConfig, compute_gae, policy_loss, train, value_loss
from vlmr.rl.agent.vector_envs import make_vector_env
from vlmr.rl.envs.babyai_goals import family_goals

from vlmr.core.calibration_file import write_calibration
from vlmr.core.errors import VlmrError

TINY = dict(total_timesteps=256, num_envs=4, num_steps=64, eval_episodes=4, final_eval_episodes=4,
            actions=["left", "right", "forward"], progress=False)


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(RewardModel.create("vlmr-tiny", family_goals("goto")).save(tmp_path_factory.mktemp("rm") / "rm"))


# ------------------------------------------------------------------------------------------------ maths
def test_gae_matches_hand_computed_values():
    # env 0: an episode ends at t=1; env 1: no ends, lambda=1 -> discounted return minus value
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [0.4, 0.0], [0.3, 0.0]])
    ends = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    adv, ret = compute_gae(rewards, values, ends, torch.tensor([0.2, 0.0]), gamma=0.9, gae_lambda=0.8)
    # t=2: 2 + 0.9*0.2 - 0.3 = 1.88; t=1: episode ended -> 0 - 0.4 = -0.4; t=0: (1 + 0.9*0.4 - 0.5) + 0.72*(-0.4)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.572, -0.4, 1.88]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([1.072, 0.0, 2.18]))
    adv1, _ = compute_gae(rewards[:, 1:], values[:, 1:], ends[:, 1:], torch.tensor([0.0]), 0.9, 1.0)
    torch.testing.assert_close(adv1[:, 0], torch.tensor([0.81, 0.9, 1.0]))


def test_policy_loss_clips_and_reports_kl_and_clipfrac():
    old = torch.zeros(2)
    new = torch.full((2,), math.log(1.5), requires_grad=True)  # ratio 1.5, outside [0.8, 1.2]
    adv = torch.tensor([1.0, -1.0])
    loss, kl, clipfrac = policy_loss(new, old, adv, clip_coef=0.2)
    # adv +1: max(-1.5, -1.2) = -1.2 (clipped, no gradient); adv -1: max(1.5, 1.2) = 1.5 (unclipped)
    assert loss.item() == pytest.approx(0.15)
    assert kl.item() == pytest.approx(0.5 - math.log(1.5))
    assert clipfrac.item() == 1.0
    loss.backward()
    assert new.grad[0].item() == 0.0 and new.grad[1].item() == pytest.approx(0.5 * 1.5)
    same, kl0, cf0 = policy_loss(old, old, adv * 3, 0.2)
    assert same.item() == pytest.approx(0.0) and kl0.item() == 0.0 and cf0.item() == 0.0


def test_value_loss_clipped_and_unclipped():
    new, old, ret = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0])
    assert value_loss(new, old, ret, 0.2, clip=False).item() == pytest.approx(0.5)
    assert value_loss(new, old, ret, 0.2, clip=True).item() == pytest.approx(0.5 * 1.8 ** 2)  # clipped is worse


def test_agent_goal_table_is_frozen_and_conditions_the_policy():
    torch.manual_seed(0)
    table = torch.eye(3)
    agent = Agent((7, 7, 3), "symbolic", table, num_actions=3, hidden=16)
    assert all(p is not agent.goal_table for p in agent.parameters())
    obs = torch.randint(0, 6, (5, 7, 7, 3), dtype=torch.uint8)
    action, logp, ent, value = agent.get_action_and_value(obs, torch.tensor([0, 1, 2, 0, 1]))
    assert action.shape == logp.shape == ent.shape == value.shape == (5,)
    opt = torch.optim.Adam(agent.parameters(), lr=0.1)
    (-agent.get_value(obs, torch.zeros(5, dtype=torch.long)).sum()).backward()
    opt.step()
    torch.testing.assert_close(agent.goal_table, table)
    # different goals, same observation: different values (the goal reaches the critic)
    v = agent.get_value(obs[:1].repeat(3, 1, 1, 1), torch.arange(3))
    assert len(set(v.tolist())) == 3
    pix = Agent((56, 56, 3), "pixels", table, 3, 16)
    assert pix.get_value(torch.zeros(2, 56, 56, 3, dtype=torch.uint8), torch.tensor([0, 1])).shape == (2,)


class BotAgent:
    """Plays minigrid's BabyAIBot in every sub-env (an oracle that reaches the goal); `evaluate` calls it."""

    def __init__(self, envs):
        self.envs, self.bots = envs, {}

    def get_action_and_value(self, obs, goals, greedy=False):
        from minigrid.utils.baby_ai_bot import BabyAIBot

        actions = []
        for i, env in enumerate(self.envs.envs):
            if env.unwrapped.step_count == 0 or i not in self.bots:  # a new episode: a new bot
                self.bots[i] = BabyAIBot(env.unwrapped)
            actions.append(int(self.bots[i].replan()))
        return torch.tensor(actions), None, None, None


class ConstantAgent:
    def __init__(self, action: int):
        self.action = action

    def get_action_and_value(self, obs, goals, greedy=False):
        return torch.full((len(obs),), self.action), None, None, None


def test_evaluate_counts_the_envs_own_success():
    envs = make_vector_env("BabyAI-GoToObj-v0", 4, AutoresetMode.NEXT_STEP)
    lookup, action_ids, seeds = GoalLookup(family_goals("goto"), "onehot"), np.arange(7), list(range(8))
    assert evaluate(BotAgent(envs), envs, lookup, seeds, action_ids, "cpu") == 1.0
    assert evaluate(ConstantAgent(6), envs, lookup, seeds, action_ids, "cpu") == 0.0  # "done", never moving
    assert evaluate(ConstantAgent(2), envs, lookup, seeds, action_ids, "cpu") == 0.0  # forward into a wall
    envs.close()


# ------------------------------------------------------------------------------------------------ runs
def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ground_truth_run_writes_result_and_metrics(tmp_path):
    cfg = PPOConfig(**TINY, goal_encoding="onehot", out_dir=str(tmp_path / "gt"), seed=1)
    result = train(cfg)
    saved = json.loads((tmp_path / "gt" / "result.json").read_text())
    assert saved["env_steps"] == 256 and saved["reward_quality"] is None and saved["cache"] is None
    assert saved["final_success_rate"] == result["final_success_rate"]
    assert saved["final_success_rate"] * 4 in (0, 1, 2, 3, 4)  # a rate over the 4 final evaluation episodes
    assert saved["curves"]["eval_steps"] == [256]
    rows = read_csv(tmp_path / "gt" / "metrics.csv")
    for key in ("charts/SPS", "charts/success_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy",
                "losses/approx_kl", "losses/clipfrac"):
        assert rows[-1][key] != "", key
    assert (tmp_path / "gt" / "run.json").is_file()


def test_vlm_run_monitors_reward_quality(tmp_path, tiny_rm_dir):
    cfg = PPOConfig(**TINY, env_id="BabyAI-GoToObj-v0", reward_model=tiny_rm_dir, out_dir=str(tmp_path / "vlm"),
                    image_size=64)
    result = train(cfg)
    q = result["reward_quality"]
    assert q["tp"] + q["fp"] + q["fn"] + q["tn"] == 256
    assert result["cache"]["frames"] == 256 and result["cache"]["model_frames"] <= 256
    assert result["goal_source"].startswith("text:")  # the reward model's own text embeddings
    rows = read_csv(tmp_path / "vlm" / "metrics.csv")
    assert "reward/precision" in rows[0] and "reward/recall" in rows[0]
    # the same run again in this process: every frame comes from the shared reward cache, same results
    again = train(PPOConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "again")}))
    assert again["cache"]["model_frames"] == 0 and again["cache"]["hits"] == 256
    assert again["reward_quality"] == q and again["curves"]["success_rate"] == result["curves"]["success_rate"]


def test_run_saves_an_agent_that_reloads_to_the_same_policy(tmp_path, tiny_rm_dir, monkeypatch):
    from vlmr.rl.agent import ppo
    from vlmr.rl.agent.policy import load_agent, save_agent

    trained = {}

    def spy(path, agent, record):  # the live agent, to compare the reloaded one with
        trained["agent"] = agent
        return save_agent(path, agent, record)

    monkeypatch.setattr(ppo, "save_agent", spy)
    out = tmp_path / "vlm"
    train(PPOConfig(**TINY, env_id="BabyAI-GoToObj-v0", reward_model=tiny_rm_dir, out_dir=str(out), image_size=64,
                    seed=3))
    agent, record = load_agent(out / "agent.pt")
    assert (out / "agent.pt").stat().st_mtime_ns <= (out / "result.json").stat().st_mtime_ns  # saved before the result
    assert record["reward_model_id"] == RewardModel.load(tiny_rm_dir).model_id and record["calibration"] is None
    assert record["action_names"] == ["left", "right", "forward"] and record["action_ids"] == [0, 1, 2]
    assert record["env_id"] == "BabyAI-GoToObj-v0" and record["image_size"] == 64 and record["obs_shape"] == [7, 7, 3]
    assert record["goals"] == RewardModel.load(tiny_rm_dir).goals and record["terminate_on_reward"] is True
    live = trained["agent"].cpu()
    assert not torch.equal(live.actor[0].weight, Agent((7, 7, 3), "symbolic", live.goal_table, 3).actor[0].weight)
    obs = torch.randint(0, 6, (16, 7, 7, 3), dtype=torch.uint8)
    goals = torch.arange(16) % len(record["goals"])
    with torch.no_grad():
        torch.testing.assert_close(agent.actor(agent.features(obs, goals)), live.actor(live.features(obs, goals)))
        torch.manual_seed(0)
        sampled = agent.get_action_and_value(obs, goals)[0]
        torch.manual_seed(0)
        assert torch.equal(sampled, live.get_action_and_value(obs, goals)[0])
    (out / "agent.pt").write_bytes(b"not a torch file")
    with pytest.raises(VlmrError, match="cannot read agent"):
        load_agent(out / "agent.pt")


def test_bad_input_errors(tmp_path, tiny_rm_dir):
    with pytest.raises(VlmrError, match="goal_model=DIR"):
        train(PPOConfig(**TINY, out_dir=str(tmp_path / "a")))  # text goals but no reward model at all
    # a mission outside the model's goal set is scored as a new goal (tests/test_goal_subset.py); the policy's
    # one-hot vocabulary must still cover the env's missions
    with pytest.raises(VlmrError, match="does not cover the env's missions"):
        train(PPOConfig(**TINY, env_id="BabyAI-GoToObj-v0", goal_encoding="onehot", goals=["go to the red ball"],
                        out_dir=str(tmp_path / "b")))
    write_calibration(tmp_path / "cal.json", "another-model",
                      {g: {"temperature": 0.01, "threshold": 0.5} for g in family_goals("goto")})
    with pytest.raises(VlmrError, match="not for this one"):
        train(PPOConfig(**TINY, reward_model=tiny_rm_dir, calibration=str(tmp_path / "cal.json"),
                        out_dir=str(tmp_path / "c")))
    with pytest.raises(VlmrError, match="unknown env_id"):
        train(PPOConfig(**TINY, env_id="BabyAI-Nope-v0", goal_encoding="onehot", goals=["x"],
                        out_dir=str(tmp_path / "d")))


def test_cli_rejects_bad_config(tmp_path, capsys):
    from vlmr.cli import main

    cfg = tmp_path / "rl.yaml"
    cfg.write_text("env_id: BabyAI-GoToObj-v0\nactions: [left, jump]\n")
    assert main(["rl", str(cfg)]) == 2
    assert "jump" in capsys.readouterr().err
    assert main(["rl", str(cfg), "actions=[left]", "num_stepz=3"]) == 2
    assert "num_steps" in capsys.readouterr().err  # the "did you mean" hint


@pytest.mark.slow  # ~15 s of PPO: the learning check
def test_ppo_learns_go_to_red_ball_with_ground_truth_reward(tmp_path):
    cfg = PPOConfig(total_timesteps=25_600, actions=["left", "right", "forward"], goal_encoding="onehot",
                    logger="none", progress=False, out_dir=str(tmp_path / "learn"), seed=0)
    result = train(cfg)
    assert result["final_success_rate"] >= 0.9, result["curves"]["success_rate"]
    assert result["curves"]["success_rate"][0] < 0.8  # it was not solved before training
    assert np.all(np.isfinite(result["curves"]["success_rate"]))
