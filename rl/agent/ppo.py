"""PPO (CleanRL-style, one file) for goal-conditioned BabyAI/MiniGrid or Crafter agents on a VLM or ground-truth reward.

    vlmr rl configs/rl/babyai_goto.yaml                                   # the env's own reward
    vlmr rl configs/rl/babyai_goto.yaml reward_model=runs/demo/adapted \
        calibration=runs/demo/adapted/calibration.json frame_cache=100000 # the VLM reward
    vlmr rl configs/rl/babyai_goto.yaml total_timesteps=20000 logger=none

Read top to bottom: config, the pure PPO maths (`compute_gae`, `policy_loss`,
`value_loss`), then `train`, whose loop has one banner comment per phase
(rollout, GAE, policy and value loss). The agent and held-out evaluation are in
rl/agent/policy.py, environments in rl/agent/vector_envs.py, the VLM reward in rl/agent/reward_wrapper.py.

- The reward always comes from pixels (`vlmr.rl.agent.reward_wrapper.VLMReward`) unless
  `reward_model` is null: then it is the env's own reward (ground truth).
- Policy observations: `symbolic` (MiniGrid's 7x7x3 egocentric encoding, the
  fast CPU default) or `pixels` (the agent's 56 px point of view; Crafter's 64 px frame).
- The goal enters as a frozen table row indexed by the mission: the reward
  model's text embedding of the goal (`goal_encoding: text`), or a one-hot over
  the goal set. The ground-truth reward has no reward model, so there `text`
  needs `goal_model` (a reward-model dir used only for its text embeddings).
- Held-out success: every `eval_every` updates, `eval_episodes` episodes from
  env seeds eval_seed, eval_seed+1, ..., judged by the env's own success.
- Reward-hacking monitor: per rollout batch, precision/recall of the VLM's
  "goal reached" against the env's success (`reward/precision`, `reward/recall`).
- Outputs in `out_dir`: metrics.csv, run.json, agent.pt (the trained policy and what
  rebuilds it and its env and reward: rl/agent/policy.py `load_agent`), result.json
  (written last, atomically: its presence means the run finished), and wandb/ with logger=wandb.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn
from vlmr.rl.agent.policy import AGENT_FILE, Agent, GoalLookup, evaluate, goal_vocabulary, save_agent
from vlmr.rl.agent.vector_envs import action_names, env_goal_set, make_vector_env, missions
from vlmr.rl.experiments.stats import nan_to_none

from vlmr.core.config import (
    PositiveFloat,
    PositiveInt,
    config_dataclass,
    config_fingerprint,
    config_to_dict,
    stage_main,
)
from vlmr.core.files import atomic_write_json, check_writable, sha256_file, sha256_text
from vlmr.core.metrics import count_metrics, pooled_count_metrics
from vlmr.core.reporting import fmt
from vlmr.core.tracking import StepLog

RESULT_VERSION = 1


@config_dataclass
class PPOConfig:
    env_id: str = "BabyAI-GoToRedBallNoDists-v0"  # gymnasium id of a BabyAI / MiniGrid env, or vlmr/CrafterGoal-v0
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # vlmr/CrafterGoal-v0's options:
    # goals (sampled one per episode), max_steps, obs_size (rl/envs/crafter_gym.py)
    reward_model: str | None = None  # reward-model dir for the VLM reward; null = the env's own reward
    calibration: str | None = None  # calibration.json for reward_model; null = the model's default tau, beta
    terminate_on_reward: bool = True  # end the episode when the VLM reward fires (the paper's sparse goal reward)
    frame_cache: int = 100_000  # entries in the frame-hash reward cache; 0 = off
    memo_render: bool = True  # reuse drawn frames when minigrid's view grid repeats (exact; see MemoRender)
    goal_encoding: Literal["text", "onehot"] = "text"  # frozen text embedding of the mission, or one-hot
    goal_model: str | None = None  # reward-model dir whose text embeddings encode goals; null = reward_model
    goals: list[str] | None = None  # goal vocabulary for one-hot; null = the env's goal set, else the model's
    obs_mode: Literal["symbolic", "pixels"] = "symbolic"  # policy input: MiniGrid grid encoding or egocentric pixels
    image_size: PositiveInt | None = None  # rendered frame size (px) for the reward; null = the reward model's input size
    actions: list[str] | None = None  # action subset by name (left, right, forward / move_left, do, ...); null = all
    total_timesteps: int = 30_000  # env steps over all envs
    num_envs: int = 8  # parallel envs
    num_steps: int = 64  # steps per env per rollout
    vector: Literal["sync", "async"] = "sync"  # gymnasium vector env type (async: one process per env)
    learning_rate: PositiveFloat = 2e-3  # Adam learning rate (tuned on BabyAI GoTo levels; CleanRL's 2.5e-4 is slow here)
    anneal_lr: bool = True  # linear decay of the learning rate to 0
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 4  # minibatches per epoch
    update_epochs: int = 4  # epochs per rollout
    norm_adv: bool = True  # normalise advantages per minibatch
    clip_coef: float = 0.2  # PPO ratio clip
    clip_vloss: bool = True  # clip the value loss too
    ent_coef: float = 0.01  # entropy bonus weight
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping
    target_kl: float | None = None  # stop the epochs early above this approx KL; null = never
    hidden: int = 64  # hidden width of actor and critic
    eval_every: int = 5  # updates between held-out evaluations (the first and last updates always evaluate)
    eval_episodes: int = 32  # episodes per periodic evaluation
    final_eval_episodes: int = 100  # episodes in the final evaluation (the reported final success rate)
    eval_seed: int = 1_000_000  # held-out env seeds start here; training resets from `seed`
    seed: int = 0  # seed for torch, numpy and the training envs
    torch_threads: int | None = None  # torch intra-op threads; null = torch's default
    device: str = "cpu"  # torch device for the agent and the reward model
    logger: Literal["wandb", "csv", "none"] = "csv"  # wandb logs to W&B (offline unless WANDB_MODE) and CSV
    wandb_project: str = "vlmr"  # W&B project
    out_dir: str = "runs/rl/default"  # run folder: metrics.csv, run.json, result.json
    progress: bool = True  # show a progress bar
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')

    def __post_init__(self):
        small = [k for k in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_every", "eval_episodes",
                             "final_eval_episodes", "hidden") if getattr(self, k) < 1]
        if small:
            raise ValueError(f"{', '.join(small)} must be >= 1")
        if self.actions is not None:
            names = action_names(self.env_id)
            bad = [a for a in self.actions if a not in names]
            if bad or not self.actions:
                raise ValueError(f"unknown actions {bad} for {self.env_id}; choose from {names}")
        if self.total_timesteps < self.num_envs * self.num_steps:
            raise ValueError(f"total_timesteps {self.total_timesteps} < one rollout (num_envs * num_steps = "
                             f"{self.num_envs * self.num_steps})")
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError("num_envs * num_steps must be divisible by num_minibatches")
        if self.calibration and not self.reward_model:
            raise ValueError("calibration is set but reward_model is not; a calibration belongs to a reward model")


# ------------------------------------------------------------------------------------------------ PPO maths
def compute_gae(rewards: torch.Tensor, values: torch.Tensor, ends: torch.Tensor, next_value: torch.Tensor,
                gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (T, N) rollout.

    ends[t] = 1 when the transition at step t finished its episode (terminated or truncated), so the
    value of the next observation (the next episode's first) is not bootstrapped. next_value: V of the
    observation after the last step. Returns (advantages, returns), both (T, N).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(num_steps)):
        following = next_value if t == num_steps - 1 else values[t + 1]
        alive = 1.0 - ends[t]
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * gae_lambda * alive * last
        advantages[t] = last
    return advantages, advantages + values


def policy_loss(new_logprob, old_logprob, advantages, clip_coef: float):
    """PPO's clipped surrogate (to minimise) -> (loss, approx_kl, clipfrac). approx_kl is the k3 estimator."""
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef)).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return loss, approx_kl, clipfrac


def value_loss(new_value, old_value, returns, clip_coef: float, clip: bool = True):
    """0.5 * squared error to the returns; with clip, the max of the clipped and unclipped errors."""
    unclipped = (new_value - returns) ** 2
    if not clip:
        return 0.5 * unclipped.mean()
    clipped = (old_value + (new_value - old_value).clamp(-clip_coef, clip_coef) - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


_REWARD_CACHES: dict[str, object] = {}  # frame caches shared by the runs of one process (compare's seeds)


def shared_reward_cache(reward_model, size: int):
    """One FrameCache per reward model + calibration per process: exact to share, since the reward is a
    function of (frame, goal, model, calibration), and it saves later seeds of a comparison the model calls."""
    from vlmr.rl.agent.reward_wrapper import FrameCache

    if size <= 0:
        return None
    key = sha256_text(reward_model.model_id + reward_model.temperatures.cpu().numpy().tobytes().hex()
                      + reward_model.thresholds.cpu().numpy().tobytes().hex())
    if key not in _REWARD_CACHES:
        _REWARD_CACHES.clear()  # one model's cache at a time: compare runs arm by arm
        _REWARD_CACHES[key] = FrameCache(size)
    return _REWARD_CACHES[key]


def fingerprint(cfg: PPOConfig) -> str:
    """Identity of what a run computes: every setting except where and how it is logged."""
    return config_fingerprint(cfg, drop=("out_dir", "logger", "wandb_project", "progress", "torch_threads",
                                         "strict"))


# ------------------------------------------------------------------------------------------------ training
def train(cfg: PPOConfig, extra: dict | None = None) -> dict:
    """Train one agent; returns (and writes to out_dir/result.json) its curves and final success."""
    from tqdm import tqdm
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent.reward_wrapper import VLMReward

    from vlmr.core.provenance import run_info

    out = check_writable(cfg.out_dir, "run folder")  # before the envs start or a step is trained
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    info = run_info(config_to_dict(cfg), cfg.seed)
    atomic_write_json(out / "run.json", info)

    reward_model = None
    if cfg.reward_model:
        reward_model = RewardModel.load(cfg.reward_model, calibration=cfg.calibration, device=device,
                                       strict=cfg.strict)
        # missions outside the model's goal set (held-out goals, say) are scored as new goals: the fit for new goals,
        # `calibrated: false`, a warning (strict: an error)
        reward_model.add_goals(env_goal_set(cfg.env_id, cfg.env_kwargs) or [], strict=cfg.strict)
    goals, table, source = goal_vocabulary(cfg, reward_model)
    lookup = GoalLookup(goals, source)
    names = action_names(cfg.env_id)
    action_ids = np.array([names.index(a) for a in (cfg.actions or names)])
    env_args = {"obs_mode": cfg.obs_mode, "env_kwargs": cfg.env_kwargs}

    image_size = cfg.image_size or (reward_model.spec.image_size if reward_model is not None else None)
    if reward_model is not None:  # the wrapper resets finished envs itself and presents SAME_STEP semantics
        envs = VLMReward(make_vector_env(cfg.env_id, cfg.num_envs, AutoresetMode.DISABLED, image_size, vector=cfg.vector,
                                         memo_render=cfg.memo_render, **env_args), reward_model,
                         terminate_on_reward=cfg.terminate_on_reward, mission_fn=missions,
                         cache=shared_reward_cache(reward_model, cfg.frame_cache))
    else:
        envs = make_vector_env(cfg.env_id, cfg.num_envs, AutoresetMode.SAME_STEP, vector=cfg.vector, **env_args)
    eval_envs = make_vector_env(cfg.env_id, min(cfg.num_envs, cfg.eval_episodes), AutoresetMode.NEXT_STEP,
                                **env_args)
    obs_shape = envs.single_observation_space.shape
    agent = Agent(obs_shape, cfg.obs_mode, table, len(action_ids), cfg.hidden).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.learning_rate, eps=1e-5)
    logger = StepLog(cfg.logger, out, info, cfg.wandb_project, out.name, job_type="rl")

    T, N = cfg.num_steps, cfg.num_envs
    batch_size = T * N
    minibatch_size = batch_size // cfg.num_minibatches
    num_updates = cfg.total_timesteps // batch_size
    obs_buf = torch.zeros((T, N, *obs_shape), dtype=torch.uint8, device=device)
    goal_buf = torch.zeros((T, N), dtype=torch.long, device=device)
    act_buf = torch.zeros((T, N), dtype=torch.long, device=device)
    logp_buf, rew_buf, end_buf, val_buf = (torch.zeros((T, N), device=device) for _ in range(4))
    pred_buf, truth_buf = np.zeros((T, N), dtype=bool), np.zeros((T, N), dtype=bool)

    curves = {"eval_steps": [], "success_rate": [], "rollout_steps": [], "precision": [], "recall": [],
              "rollout_success_rate": [], "episodic_return": []}
    quality_counts = []
    ep_return = np.zeros(N)
    global_step, start, eval_s = 0, time.time(), 0.0
    obs_np, _ = envs.reset(seed=cfg.seed)
    next_obs = torch.as_tensor(obs_np, device=device)
    next_goal = torch.as_tensor(lookup(missions(envs)), device=device)
    bar = tqdm(range(1, num_updates + 1), desc=f"ppo {out.name}", disable=not cfg.progress, leave=False)

    for update in bar:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (update - 1.0) / num_updates) * cfg.learning_rate

        # ============================== rollout: N envs x T steps with the current policy
        finished_returns, finished_success = [], []
        for t in range(T):
            global_step += N
            obs_buf[t], goal_buf[t] = next_obs, next_goal
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs, next_goal)
            act_buf[t], logp_buf[t], val_buf[t] = action, logprob, value
            obs_np, reward, term, trunc, step_info = envs.step(action_ids[action.cpu().numpy()])
            done = np.logical_or(term, trunc)
            gt_success = step_info["gt_success"] if reward_model is not None else term & (reward > 0)
            if reward_model is not None:
                pred_buf[t], truth_buf[t] = step_info["vlm_success"], gt_success
            rew_buf[t] = torch.as_tensor(reward, dtype=torch.float32, device=device)
            end_buf[t] = torch.as_tensor(done, dtype=torch.float32, device=device)
            ep_return += reward
            for i in np.flatnonzero(done):
                finished_returns.append(ep_return[i])
                finished_success.append(bool(gt_success[i]))
                ep_return[i] = 0.0
            next_obs = torch.as_tensor(obs_np, device=device)
            if done.any():  # SAME_STEP semantics: finished envs already show their next episode
                next_goal = torch.as_tensor(lookup(missions(envs)), device=device)

        # ============================== GAE: advantages and returns (bootstrapped from V(next_obs))
        with torch.no_grad():
            next_value = agent.get_value(next_obs, next_goal)
            advantages, returns = compute_gae(rew_buf, val_buf, end_buf, next_value, cfg.gamma, cfg.gae_lambda)

        # ============================== PPO update: clipped policy loss, value loss, entropy bonus
        b_obs, b_goal = obs_buf.reshape(batch_size, *obs_shape), goal_buf.reshape(-1)
        b_act, b_logp, b_adv = act_buf.reshape(-1), logp_buf.reshape(-1), advantages.reshape(-1)
        b_ret, b_val = returns.reshape(-1), val_buf.reshape(-1)
        clipfracs, approx_kl = [], torch.tensor(0.0)
        for _epoch in range(cfg.update_epochs):
            order = torch.randperm(batch_size, device=device)
            for mb_start in range(0, batch_size, minibatch_size):
                mb = order[mb_start:mb_start + minibatch_size]
                _, new_logp, entropy, new_value = agent.get_action_and_value(b_obs[mb], b_goal[mb], b_act[mb])
                mb_adv = b_adv[mb]
                if cfg.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                # ---- policy loss (clipped surrogate)
                pg_loss, approx_kl, clipfrac = policy_loss(new_logp, b_logp[mb], mb_adv, cfg.clip_coef)
                clipfracs.append(clipfrac.item())
                # ---- value loss (optionally clipped around the rollout's values)
                v_loss = value_loss(new_value, b_val[mb], b_ret[mb], cfg.clip_coef, cfg.clip_vloss)
                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                optimizer.step()
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                break

        # ============================== logging, reward-hacking monitor, held-out evaluation
        sps = int(global_step / (time.time() - start - eval_s))  # training only: held-out evaluation excluded
        metrics = {"charts/SPS": sps, "charts/learning_rate": optimizer.param_groups[0]["lr"],
                   "losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
                   "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
                   "losses/clipfrac": float(np.mean(clipfracs))}
        if finished_returns:
            metrics["charts/episodic_return"] = float(np.mean(finished_returns))
            metrics["charts/rollout_success_rate"] = float(np.mean(finished_success))
        curves["rollout_steps"].append(global_step)
        curves["episodic_return"].append(metrics.get("charts/episodic_return", math.nan))
        curves["rollout_success_rate"].append(metrics.get("charts/rollout_success_rate", math.nan))
        if reward_model is not None:
            counts = count_metrics(pred_buf, truth_buf)  # precision/recall None when undefined (never 0 or 1)
            quality_counts.append(counts)
            metrics["reward/precision"], metrics["reward/recall"] = counts["precision"], counts["recall"]
            metrics["reward/cache_hit_rate"] = envs.cache_stats["hit_rate"]
            curves["precision"].append(counts["precision"])
            curves["recall"].append(counts["recall"])
        if update == 1 or update % cfg.eval_every == 0 or update == num_updates:
            episodes = cfg.final_eval_episodes if update == num_updates else cfg.eval_episodes
            seeds = list(range(cfg.eval_seed, cfg.eval_seed + episodes))
            eval_start = time.time()
            metrics["charts/success_rate"] = evaluate(agent, eval_envs, lookup, seeds, action_ids, device)
            eval_s += time.time() - eval_start
            curves["eval_steps"].append(global_step)
            curves["success_rate"].append(metrics["charts/success_rate"])
            bar.set_postfix(success=f"{metrics['charts/success_rate']:.2f}", sps=sps)
        logger.log(metrics, global_step)

    wall = time.time() - start
    envs.close()
    eval_envs.close()
    logger.close()

    # ============================== save the agent (before result.json: every finished run has one)
    save_agent(out / AGENT_FILE, agent, {
        "obs_shape": list(obs_shape), "hidden": cfg.hidden, "goals": goals, "goal_source": source,
        "action_ids": action_ids.tolist(), "action_names": [names[i] for i in action_ids],
        "env_id": cfg.env_id, "env_kwargs": cfg.env_kwargs, "image_size": image_size, "seed": cfg.seed,
        "reward_model": cfg.reward_model, "reward_model_id": reward_model.model_id if reward_model else None,
        "calibration": cfg.calibration, "calibration_sha256": sha256_file(cfg.calibration) if cfg.calibration else None,
        "terminate_on_reward": cfg.terminate_on_reward, "fingerprint": fingerprint(cfg), "env_steps": global_step})
    result = {
        "version": RESULT_VERSION, "fingerprint": fingerprint(cfg), "config": config_to_dict(cfg),
        "reward_model_id": reward_model.model_id if reward_model else None, "goal_source": source,
        "env_steps": global_step, "wall_s": wall, "eval_s": eval_s, "sps": global_step / (wall - eval_s),
        "final_success_rate": curves["success_rate"][-1], "final_eval_episodes": cfg.final_eval_episodes,
        "reward_quality": pooled_count_metrics(quality_counts) if quality_counts else None,
        "cache": envs.cache_stats if reward_model is not None else None, "curves": curves, **(extra or {}),
    }
    atomic_write_json(out / "result.json", nan_to_none(result))
    quality = result["reward_quality"]
    print(f"ppo {out.name}: {global_step} steps in {wall:.0f}s ({result['sps']:.0f} SPS), final success "
          f"{result['final_success_rate']:.2f}" + (f", reward precision {fmt(quality['precision'], 2)}" if quality else "")
          + f" -> {out / 'result.json'}")
    return nan_to_none(result)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, PPOConfig, lambda cfg: train(cfg), "vlmr rl",
                      "Train one goal-conditioned PPO agent on a VLM reward or the env's own reward.", kind="rl")
