"""`vlmr bench`: every performance figure of vlmr as ratios measured side by side in one run.

    vlmr bench --quick                  # under 5 minutes on 2 CPU cores: every ratio, smaller budgets
    vlmr bench                          # the full set (batch 256, ViT-B-32 LoRA cost, longer PPO runs)
    vlmr bench --only reward lora --out bench_out

Sections (each is also a module you can run alone):
1. reward      batched reward vs the bare image encoder (the limit) vs a naive loop  vlmr.bench.reward
2. cache       frame-cache hit rate and speed-up on recorded BabyAI rollouts          (here)
3. rl          PPO steps/s with the VLM reward vs the ground-truth reward             vlmr.bench.ppo
4. lora        LoRA vs full fine-tune: trainable fraction, images/s, peak memory      vlmr.bench.lora
5. collection  BabyAI frames/s with 1 and 2 workers                                    (here)
6. integrity   read throughput with and without shard and frame hash checks            vlmr.bench.integrity
Writes <out>/bench.json and <out>/bench.md and prints the ratios against the goals.
Absolute numbers from a shared CPU are noisy; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlmr.core.files import atomic_write_json, atomic_write_text

SECTIONS = ("reward", "cache", "rl", "lora", "collection", "integrity")


def bench_cache(image_size: int = 64, steps: int = 2000, num_envs: int = 8, arch: str = "vlmr-tiny") -> dict:
    """Record random-policy BabyAI rollouts, then score them with and without VLMReward's frame-hash cache."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent.reward_wrapper import VLMReward
    from vlmr.rl.envs.babyai import goal_set, make_env

    env_id = "BabyAI-GoToLocal-v0"
    goals = goal_set(env_id)
    envs = [make_env(env_id, image_size=image_size) for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    for i, env in enumerate(envs):
        env.reset(seed=i)
    batches = []
    for _ in range(steps // num_envs):
        frames, goal_ids = [], []
        for env in envs:
            _, _, term, trunc, _ = env.step(int(rng.integers(0, 3)))
            if term or trunc:
                env.reset()
            frames.append(env.render())
            goal_ids.append(goals.index(env.unwrapped.mission) if env.unwrapped.mission in goals else 0)
        batches.append((np.stack(frames), np.asarray(goal_ids)))
    torch.manual_seed(0)
    rm = RewardModel.create(arch, goals)
    vec = gym.vector.SyncVectorEnv([lambda: make_env(env_id, image_size=image_size)],
                                   autoreset_mode=AutoresetMode.DISABLED)
    plain, cached = VLMReward(vec, rm, cache_size=0), VLMReward(vec, rm, cache_size=100_000)
    t0 = time.perf_counter()
    without = [plain.score(f, g) for f, g in batches]
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with_cache = [cached.score(f, g) for f, g in batches]
    cached_s = time.perf_counter() - t0
    vec.close()
    return {"env_id": env_id, "arch": arch, "frames": len(batches) * num_envs,
            "hit_rate": cached.cache_stats["hit_rate"],
            "speedup": plain_s / cached_s,
            "identical_rewards": all(np.array_equal(a, b) for a, b in zip(without, with_cache))}


def bench_collection(frames: int = 4000) -> dict:
    from vlmr.core.config import load_config
    from vlmr.rl.collect.collect import CollectConfig, collect

    out = {}
    with tempfile.TemporaryDirectory(prefix="vlmr-bench-collect-") as tmp:
        for workers in (1, 2):
            cfg = load_config(CollectConfig, "data/babyai_goto",
                              [f"out_dir={tmp}/w{workers}", f"frames.train={frames}", "frames.val=500",
                               "frames.test=500", "shard_size=500"])
            t0 = time.perf_counter()
            collect(cfg, workers=workers, progress=False)
            out[f"workers_{workers}_fps"] = (frames + 1000) / (time.perf_counter() - t0)
    out["scaling_2_over_1"] = out["workers_2_fps"] / out["workers_1_fps"]
    return out


def run_sections(sections, quick: bool) -> dict:
    from vlmr.bench.lora import bench_lora
    from vlmr.bench.ppo import bench_rl
    from vlmr.bench.reward import reward_throughput

    results: dict = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU: bf16 autocast, and ViT-L-14 too
    big = ("ViT-B-32", "ViT-L-14") if device == "cuda" else ("ViT-B-32",)
    for name in sections:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        if name == "reward":
            batch_sizes = (1, 16, 64) if quick else (1, 16, 64, 256)
            results[name] = [reward_throughput(arch, batch_sizes if arch not in big or not quick else (1, 64),
                                               min_seconds=0.3 if quick else 1.0, naive_frames=8 if quick else 16,
                                               device=device)
                             for arch in ("vlmr-tiny", "vlmr-small", *big)]
        elif name == "cache":
            results[name] = bench_cache(steps=800 if quick else 4000)
        elif name == "rl":
            results[name] = bench_rl(steps=6144 if quick else 10240)
        elif name == "lora":
            results[name] = bench_lora(("vlmr-small",) if quick and device == "cpu" else ("vlmr-small", *big),
                                       steps=2 if quick else 4, device=device)
        elif name == "collection":
            results[name] = bench_collection(3000 if quick else 6000)
        elif name == "integrity":
            from vlmr.bench.integrity import bench_integrity

            results[name] = bench_integrity(1000 if quick else 4000, min_seconds=0.5 if quick else 2.0)
        print(f"   {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def goal_lines(results: dict) -> list[str]:
    """Each goal of the benchmark issue, with the measured ratio and whether it is met."""
    lines = []

    def check(label, value, goal, higher=True):
        ok = value >= goal if higher else value <= goal
        lines.append(f"- {label}: {value:.2f} (goal {'>=' if higher else '<='} {goal}) {'met' if ok else 'NOT met'}")

    for r in results.get("reward", []):
        row = next((x for x in r["rows"] if x["batch_size"] == 64), None)
        if row:
            check(f"reward {r['arch']} batched/limit at batch 64", row["batched_over_limit"], 0.9)
            goal = {"vlmr-tiny": 2.5, "ViT-B-32": 5.0}.get(r["arch"])
            if goal:
                check(f"reward {r['arch']} batched/naive at batch 64", row["batched_over_naive"], goal)
    if "cache" in results:
        c = results["cache"]
        lines.append(f"- frame cache: hit rate {c['hit_rate']:.2f}, speed-up {c['speedup']:.1f}x, "
                     f"identical rewards {c['identical_rewards']}")
    if "rl" in results:
        check("PPO SPS, VLM reward (vlmr-small) / ground truth", results["rl"]["ratio"]["vlm"], 0.5)
        check("PPO SPS, VLM reward + frame cache / ground truth", results["rl"]["ratio"]["vlm_cache"], 0.5)
    for arch, r in results.get("lora", {}).items():
        check(f"LoRA {arch} trainable fraction", r["trainable_fraction"], 0.02, higher=False)
        check(f"LoRA {arch} peak memory / full", r["memory_ratio"], 0.6, higher=False)
    if "collection" in results:
        c = results["collection"]
        check("collection frames/s per worker (BabyAI, 1 worker)", c["workers_1_fps"], 300)
        lines.append(f"- collection scaling, 2 workers / 1: {c['scaling_2_over_1']:.2f}x")
    if "integrity" in results:
        i = results["integrity"]
        check("read throughput with integrity checks / without (first read)", i["read_ratio"], 0.9)
        check("finetune loader throughput with integrity checks / without", i["loader_ratio"], 0.9)
        check("collection time spent on frame hashes", i["collection_overhead"], 0.03, higher=False)
    return lines


def main(argv: list[str] | None = None) -> int:
    from vlmr.bench.lora import format_results
    from vlmr.bench.reward import markdown

    parser = argparse.ArgumentParser(prog="vlmr bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller budgets: under 5 minutes on 2 CPU cores")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", default="bench_out", help="folder for bench.json and bench.md")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = run_sections(args.only, args.quick)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"
    meta = {"date": datetime.date.today().isoformat(), "device": device, "torch_threads": torch.get_num_threads(),
            "quick": args.quick, "seconds": round(time.perf_counter() - t0, 1),
            "command": "vlmr bench" + (" --quick" if args.quick else "")}
    md = [f"# vlmr bench ({meta['date']}, {device}, {meta['torch_threads']} threads, {meta['seconds']:.0f} s)", "",
          "## Goals", "", *goal_lines(results), ""]
    if "reward" in results:
        md += ["## Reward throughput (frames/s)", "", markdown(results["reward"]), ""]
    if "lora" in results:
        md += ["## LoRA cost", "", "```", format_results(results["lora"]), "```", ""]
    if "rl" in results:
        md += ["## PPO steps/s", "", f"`{results['rl']['sps']}`", ""]
    if "integrity" in results:
        from vlmr.bench.integrity import markdown as integrity_markdown

        md += ["## Integrity checks", "", integrity_markdown(results["integrity"]), ""]
    text = "\n".join(md)
    print(text)
    out = Path(args.out)
    atomic_write_json(out / "bench.json", {"meta": meta, "results": results})
    atomic_write_text(out / "bench.md", text + "\n")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
