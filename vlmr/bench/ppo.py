"""Benchmark: PPO steps/s with the VLM reward (with and without the frame cache) against the env's own reward.

    python -m vlmr.bench.ppo                                   # vlmr-small, random init
    python -m vlmr.bench.ppo --reward-model runs/demo/adapted --steps 20000 --json

The issue's goal: VLM-reward SPS / ground-truth SPS >= 0.5 on BabyAI with 2
cores. SPS is PPO's own charts/SPS (rollout + update, held-out evaluation
excluded). Without --reward-model a vlmr-small (or --arch) reward model with
random weights over the env's goal set is made in a temp dir: throughput does
not depend on the weights, except that a model that never fires gives longer
episodes (fewer resets) than a trained one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def bench_rl(env_id: str = "BabyAI-GoToRedBallNoDists-v0", reward_model: str | None = None,
             arch: str = "vlmr-small", steps: int = 10240, num_envs: int = 8, torch_threads: int | None = None,
             seed: int = 0) -> dict:
    """SPS of three PPO runs on the same budget: ground truth, VLM reward, VLM reward + frame cache."""
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent import ppo
    from vlmr.rl.agent.ppo import PPOConfig, train
    from vlmr.rl.envs.babyai import MemoRender, goal_set

    ppo._REWARD_CACHES.clear()  # every measurement starts cold
    MemoRender.memo.clear()
    MemoRender.used_bytes = 0

    with tempfile.TemporaryDirectory(prefix="vlmr-bench-rl-") as tmp:
        if reward_model is None:
            torch.manual_seed(seed)
            reward_model = str(RewardModel.create(arch, goal_set(env_id)).save(Path(tmp) / "rm"))
        common = dict(env_id=env_id, total_timesteps=steps, num_envs=num_envs, num_steps=64, learning_rate=2e-3,
                      actions=["left", "right", "forward"], goal_encoding="onehot", logger="none", progress=False,
                      eval_every=10**9, eval_episodes=8, final_eval_episodes=8, seed=seed, torch_threads=torch_threads)
        runs = {
            "ground_truth": PPOConfig(**common, out_dir=f"{tmp}/gt"),
            "vlm": PPOConfig(**common, reward_model=reward_model, frame_cache=0, memo_render=False,
                             out_dir=f"{tmp}/vlm"),
            "vlm_cache": PPOConfig(**common, reward_model=reward_model, frame_cache=100_000,
                                   out_dir=f"{tmp}/vlm_cache"),
        }
        results = {name: train(cfg) for name, cfg in runs.items()}
    gt = results["ground_truth"]["sps"]
    return {
        "env_id": env_id, "reward_model": reward_model if not reward_model.startswith(tmp) else f"{arch} (random init)",
        "steps": steps, "num_envs": num_envs, "torch_threads": torch.get_num_threads(),
        "sps": {name: round(r["sps"], 1) for name, r in results.items()},
        "ratio": {name: round(r["sps"] / gt, 3) for name, r in results.items() if name != "ground_truth"},
        "cache": results["vlm_cache"]["cache"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmr.bench.ppo", description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="BabyAI-GoToRedBallNoDists-v0")
    parser.add_argument("--reward-model", help="reward-model dir (default: a random-init --arch model)")
    parser.add_argument("--arch", default="vlmr-small")
    parser.add_argument("--steps", type=int, default=10240)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = bench_rl(args.env_id, args.reward_model, args.arch, args.steps, args.num_envs, args.threads)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['env_id']}, reward model {out['reward_model']}, {out['steps']} steps, {out['num_envs']} envs, "
              f"{out['torch_threads']} torch threads")
        for name, sps in out["sps"].items():
            ratio = out["ratio"].get(name)
            print(f"  {name:<13} {sps:8.0f} SPS" + (f"   ratio {ratio:.2f}" if ratio is not None else ""))
        print(f"  cache: {out['cache']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
