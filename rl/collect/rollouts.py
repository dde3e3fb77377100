"""The rollout recorder: trained agents' own frames, labelled with the env's ground truth, as a dataset.

    vlmr refine configs/refine/babyai_refine.yaml   # records, fine-tunes and recalibrates (rl/experiments/refine.py)
    python -c "from vlmr.rl.collect.rollouts import RolloutConfig, record_rollouts; \
        record_rollouts(RolloutConfig(), 'runs/demo/compare', 'data/demo_rollouts', arm='adapted', \
                        data_dir='data/demo_domain')"

Each finished run of a `vlmr compare` arm left its agent (runs/ARM/seed-S/agent.pt). The recorder plays
every agent again, sampling actions as in training, in its env with the arm's reward model and
calibration (VLMReward, terminate_on_reward as the agent trained). It keeps every frame where the reward
fired and `negatives_per_positive` frames per fired one, sampled at random among the frames where it did not.
Each kept frame is labelled for every goal by the env family's `state_meta`, the labeller `vlmr collect`
uses, and stored as a `vlmr collect` sample (same meta keys, frame_sha256 included), plus
`meta["rollout"]` = {agent_seed, fired, reward, actions}: the env actions from the episode's reset to the
frame, so env_seed and actions replay its state exactly.

Env seeds: agent seed s plays seed_start + s * 1e6 + k, k < episodes_per_agent (seed_start 3e8 by default:
`vlmr collect` uses seed + 0, 1e8, 2e8 upward per split, PPO evaluates on 1e6 upward and trains from its
seed). The range is checked against the dataset's splits and the runs' evaluation and training seeds.
Splits: an episode goes to train, val or test by a hash of its env seed (`splits` fractions).

Shards are units of work like collect's: shard i of a split holds up to `episodes_per_shard` episodes of
one agent, its progress record (.progress/) makes a rerun keep it, and manifest.json (source: rollouts,
the parent compare run, arm, reward model and agents) is written last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
from vlmr.rl.collect.collect import PROGRESS_DIR, sample_meta
from vlmr.rl.collect.rollout_agents import arm_reward, check_trained_reward, find_agents

from vlmr.core.config import PositiveInt, config_dataclass, config_fingerprint, config_to_dict
from vlmr.core.dataset import (
    MANIFEST_FILE,
    SPLITS,
    ShardSink,
    read_manifest,
    sample_key,
    shard_name,
    write_manifest,
)
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, check_writable, read_json, sha256_file
from vlmr.core.quality import quality_issue

SEED_STRIDE = 1_000_000  # env seeds reserved per agent seed


@config_dataclass
class RolloutSplits:
    train: float = 0.6  # share of episodes (by a hash of their env seed) in train
    val: float = 0.2  # in val (calibration fits on it)
    test: float = 0.2  # in test


@config_dataclass
class RolloutConfig:
    episodes_per_agent: PositiveInt = 64  # episodes each agent (each compare seed of the arm) plays
    negatives_per_positive: float = 2.0  # frames where the reward did not fire kept per fired frame (per shard)
    splits: RolloutSplits = dataclasses.field(default_factory=RolloutSplits)  # split shares, summing to 1
    seed_start: int = 300_000_000  # agent seed s plays env seeds seed_start + s * 1e6 + k (module docstring)
    episodes_per_shard: PositiveInt = 16  # episodes of one agent per shard (a unit of work on resume)
    num_envs: PositiveInt = 8  # episodes played at once (one batched reward call per step)
    device: str = "cpu"  # torch device of the policies and the reward model
    torch_threads: int | None = None  # torch intra-op threads; null = torch's default

    def __post_init__(self):
        shares = [self.splits.train, self.splits.val, self.splits.test]
        if min(shares) < 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise ValueError(f"splits {shares} must be >= 0 and sum to 1 (e.g. train 0.6, val 0.2, test 0.2)")
        if self.negatives_per_positive < 0 or self.seed_start < 0:
            raise ValueError("negatives_per_positive and seed_start must be >= 0")
        if self.episodes_per_agent > SEED_STRIDE:
            raise ValueError(f"episodes_per_agent must be <= {SEED_STRIDE} (env seeds reserved per agent)")


# ------------------------------------------------------------------------------------------------ inputs
def seed_split(env_seed: int, splits: RolloutSplits) -> str:
    """The split of an episode: a hash of its env seed against the cumulative shares."""
    u = int.from_bytes(hashlib.sha256(f"rollouts:{env_seed}".encode()).digest()[:8], "big") / 2**64
    return "train" if u < splits.train else "val" if u < splits.train + splits.val else "test"


def agent_seeds(cfg: RolloutConfig, agent_seed: int) -> range:
    start = cfg.seed_start + agent_seed * SEED_STRIDE
    return range(start, start + cfg.episodes_per_agent)


def check_seed_ranges(cfg: RolloutConfig, results: dict[int, dict], manifest: dict | None, data_dir) -> None:
    """The rollout env seeds must be used by no split of the dataset and by no run's training or evaluation."""
    taken = []
    for split, entry in (manifest or {}).get("splits", {}).items():
        if entry.get("env_seeds"):
            taken.append((f"the {split} split of dataset {data_dir}", *entry["env_seeds"]))
    for seed, result in results.items():
        rl = result.get("config", {})
        evals = max(rl.get("eval_episodes", 0), rl.get("final_eval_episodes", 0))
        taken.append((f"the evaluation of run seed-{seed}", rl.get("eval_seed", 0), rl.get("eval_seed", 0) + evals - 1))
        taken.append((f"the training resets of run seed-{seed}", seed, seed + rl.get("num_envs", 1) - 1))
    for seed in results:
        ours = agent_seeds(cfg, seed)
        for what, lo, hi in taken:
            if ours.start <= hi and lo <= ours.stop - 1:
                raise VlmrError(f"rollout env seeds [{ours.start}, {ours.stop - 1}] of agent seed {seed} overlap "
                                f"{what} (env seeds [{lo}, {hi}]); set rollouts.seed_start to a free range")


def plan(cfg: RolloutConfig, seeds: list[int]) -> list[tuple[str, int, int, tuple[int, ...]]]:
    """(split, shard index, agent seed, env seeds) for every shard: each agent's episodes by split, in chunks."""
    tasks = []
    for split in SPLITS:
        index = 0
        for agent in seeds:
            mine = [s for s in agent_seeds(cfg, agent) if seed_split(s, cfg.splits) == split]
            for k in range(0, len(mine), cfg.episodes_per_shard):
                tasks.append((split, index, agent, tuple(mine[k:k + cfg.episodes_per_shard])))
                index += 1
    return tasks


# ------------------------------------------------------------------------------------------------ playing
class _Capture:
    """VLMReward's render_fn: draws each sub-env's frame and, for the episodes being recorded, labels the state
    it shows. It runs after the env step and before the wrapper resets finished envs, so the labels are the
    frame's own."""

    def __init__(self, family, goals: list[str]):
        self.family, self.goals = family, goals
        self.active, self.rngs, self.frames, self.states = None, [], [], []

    def __call__(self, envs):
        self.frames = [np.array(e.render()) for e in envs.envs]
        self.states = [self.family.state_meta(e, self.goals, self.rngs[i])
                       if self.active is not None and self.active[i] else None for i, e in enumerate(envs.envs)]
        return self.frames


def play_shard(ctx: dict, agent_seed: int, env_seeds: tuple[int, ...], seed_start: int
               ) -> tuple[list[tuple], list[tuple], int]:
    """(fired, not fired, frames scored) of one agent's episodes; each item (key, frame, meta)."""
    import torch
    from gymnasium.vector import AutoresetMode
    from vlmr.rl.agent.policy import GoalLookup
    from vlmr.rl.agent.reward_wrapper import VLMReward
    from vlmr.rl.agent.vector_envs import make_vector_env, missions
    from vlmr.rl.envs import env_family

    agent, record = ctx["agents"][agent_seed]
    env_id, device = record["env_id"], ctx["device"]
    n = min(ctx["num_envs"], len(env_seeds))
    capture = _Capture(env_family(env_id), ctx["goals"])
    inner = make_vector_env(env_id, n, AutoresetMode.DISABLED, ctx["image_size"], obs_mode=record["obs_mode"],
                            env_kwargs=record["env_kwargs"])
    envs = VLMReward(inner, ctx["reward_model"], terminate_on_reward=ctx["terminate_on_reward"], mission_fn=missions,
                     render_fn=capture, cache=ctx["cache"])
    lookup, action_ids = GoalLookup(record["goals"], record["goal_source"]), np.asarray(record["action_ids"])
    torch.manual_seed(env_seeds[0])  # the shard's actions are sampled as in training, and the same on a rerun
    fired, quiet, scored = [], [], 0
    for start in range(0, len(env_seeds), n):
        batch = list(env_seeds[start:start + n])
        capture.active = None
        obs, _ = envs.reset(seed=[*batch, *[batch[-1]] * (n - len(batch))])
        episode_missions = list(envs.missions)
        active, taken = np.arange(n) < len(batch), [[] for _ in range(n)]
        capture.active, capture.rngs = active, [np.random.default_rng([s, 3]) for s in batch + [0] * (n - len(batch))]
        while active.any():
            with torch.no_grad():
                goals = torch.as_tensor(lookup(envs.missions), device=device)
                action = agent.get_action_and_value(torch.as_tensor(obs, device=device), goals)[0]
            env_actions = action_ids[action.cpu().numpy()]
            obs, reward, term, trunc, info = envs.step(env_actions)
            for i in np.flatnonzero(active):
                taken[i].append(int(env_actions[i]))
                m = {"env": env_id, "mission": episode_missions[i], **capture.states[i]}
                meta = sample_meta(m, batch[i], batch[i] - seed_start, len(taken[i]))
                meta["rollout"] = {"agent_seed": agent_seed, "fired": bool(info["vlm_success"][i]),
                                   "reward": float(reward[i]), "actions": list(taken[i])}
                item = (sample_key(meta["episode"], meta["step"]), capture.frames[i], meta)
                (fired if meta["rollout"]["fired"] else quiet).append(item)
            scored += int(active.sum())
            active &= ~(term | trunc)
    envs.close()
    return fired, quiet, scored


# ------------------------------------------------------------------------------------------------ the dataset
def _record_path(out: Path, split: str, index: int) -> Path:
    return out / PROGRESS_DIR / f"{split}-{index:06d}.json"


def write_shard(ctx: dict, cfg: RolloutConfig, out: Path, task: tuple, fp: str) -> dict:
    """Play one shard's episodes and write its fired frames plus sampled others; returns its progress record."""
    from vlmr.core.files import write_error

    split, index, agent_seed, env_seeds = task
    fired, quiet, scored = play_shard(ctx, agent_seed, env_seeds, cfg.seed_start)
    rng = np.random.default_rng([env_seeds[0], 11])
    k = min(len(quiet), round(cfg.negatives_per_positive * len(fired)))
    picked = [quiet[i] for i in rng.choice(len(quiet), size=k, replace=False)] if k else []
    samples = sorted(fired + picked, key=lambda item: (item[2]["episode"], item[2]["step"]))
    stats = {"name": None, "samples": 0, "episodes": 0, "positives": {}, "env_seeds": None}
    if samples:  # a shard without frames is not written (nor listed in the manifest)
        try:
            with ShardSink(out, split, index) as sink:
                for key, frame, meta in samples:
                    sink.write(key, frame, meta)
        except OSError as e:
            if isinstance(e, VlmrError):
                raise
            raise write_error(out / shard_name(split, index), e, "shard") from None
        stats = sink.stats
    record = {**stats, "split": split, "index": index, "fingerprint": fp, "agent_seed": agent_seed,
              "episodes_played": len(env_seeds), "frames_scored": scored, "fired": len(fired), "negatives": k}
    atomic_write_json(_record_path(out, split, index), record)
    return record


def _finished(out: Path, split: str, index: int, fp: str, strict: bool) -> dict | None:
    """The progress record of a shard this config already wrote, intact; None when it must be (re)written."""
    path = _record_path(out, split, index)
    try:
        rec = read_json(path, "progress record") if path.is_file() else None
    except VlmrError:
        return None
    if not rec or rec.get("fingerprint") != fp:
        return None
    tar = out / shard_name(split, index)
    if rec["samples"] and (not tar.is_file() or sha256_file(tar) != rec.get("sha256")):
        quality_issue(f"shard {tar} does not match its progress record (missing, corrupt or modified); rewriting it",
                      strict)
        return None
    return rec


def _complete(out: Path, fp: str) -> bool:
    """A finished recording of this very config whose shards are intact."""
    from vlmr.core.integrity import shard_problem

    if not (out / MANIFEST_FILE).is_file():
        return False
    manifest = read_manifest(out)
    return manifest.get("fingerprint") == fp and not any(
        shard_problem(out / e["name"], e) for s in manifest["splits"].values() for e in s["shards"])


def _prepare(out_dir: str | Path, fp: str) -> Path:
    """The folder, cleared of what another recording config left (this config's finished shards stay)."""
    out = check_writable(out_dir, "rollout dataset folder")
    if (out / MANIFEST_FILE).is_file() and read_json(out / MANIFEST_FILE, "dataset manifest").get("source") != "rollouts":
        raise VlmrError(f"{out} holds a dataset that is not a rollout recording; give the rollouts another folder")
    if any(out.glob("*.tar")) and not (out / PROGRESS_DIR).is_dir():
        raise VlmrError(f"{out} holds shards the rollout recorder did not write; give the rollouts another folder")
    for rec in (out / PROGRESS_DIR).glob("*.json"):
        try:
            same = read_json(rec, "progress record").get("fingerprint") == fp
        except VlmrError:
            same = False
        if not same:  # another config's shard: its name may be planned again with other episodes
            (out / f"{rec.stem}.tar").unlink(missing_ok=True)
            rec.unlink()
    for tmp in out.glob(".*.tar.tmp"):  # shards a killed run left half-written
        tmp.unlink()
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    return out


def record_rollouts(cfg: RolloutConfig, compare_dir: str | Path, out_dir: str | Path, arm: str = "adapted",
                    data_dir: str | Path | None = None, reward_model: str | None = None,
                    calibration: str | None = None, strict: bool = False, progress: bool = True) -> Path:
    """Record the arm's agents' rollouts into out_dir (a dataset); returns it.

    reward_model / calibration: the reward the agents play with; None = the arm's own, as its agents recorded
    it (checked unchanged). data_dir: the dataset the arm's model was trained on: its goal set labels the
    frames (and must be the model's), its env seeds are kept clear of.
    """
    import torch
    from tqdm import tqdm
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent.policy import load_agent
    from vlmr.rl.agent.reward_wrapper import FrameCache
    from vlmr.rl.agent.vector_envs import env_goal_set

    from vlmr.core.dataset import check_goal_sets
    from vlmr.core.provenance import run_info

    paths = find_agents(compare_dir, arm)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    agents = {seed: load_agent(p, cfg.device) for seed, p in paths.items()}
    trained_on = arm_reward({s: r for s, (_, r) in agents.items()}, arm)
    if reward_model is None:
        check_trained_reward(trained_on, arm)
        reward_model, calibration = trained_on["reward_model"], trained_on["calibration"]
    rm = RewardModel.load(reward_model, calibration=calibration, device=cfg.device, strict=strict)
    manifest = read_manifest(data_dir) if data_dir else None
    if manifest:
        check_goal_sets(manifest["goals"], rm.goals, data_dir, f"reward model {reward_model} (arm {arm!r})",
                        holdout=manifest.get("holdout_goals"))
    goals = list(manifest["goals"]) if manifest else list(rm.goals)
    # missions outside the model's goal set are scored as new goals, as in training (ppo.train)
    rm.add_goals(env_goal_set(trained_on["env_id"], trained_on["env_kwargs"]) or [], strict=strict)
    results = {seed: read_json(p.parent / "result.json", "run result") for seed, p in paths.items()}
    check_seed_ranges(cfg, results, manifest, data_dir)
    identity = {"config": config_to_dict(cfg), "arm": arm, "goals": goals, "reward_model_id": rm.model_id,
                "calibration_sha256": sha256_file(calibration) if calibration else None,
                "agents": {str(s): sha256_file(p) for s, p in paths.items()}}
    fp = config_fingerprint(identity)
    out = Path(out_dir)
    if _complete(out, fp):
        print(f"rollouts {out}: up to date, kept")
        return out
    out = _prepare(out, fp)
    image_size = trained_on["image_size"] or rm.spec.image_size
    ctx = {"agents": agents, "reward_model": rm, "goals": goals, "image_size": image_size, "device": cfg.device,
           "num_envs": cfg.num_envs, "terminate_on_reward": trained_on["terminate_on_reward"],
           "cache": FrameCache(100_000)}
    tasks = plan(cfg, sorted(paths))
    done = {}
    with tqdm(total=sum(len(t[3]) for t in tasks), unit="episode", desc=f"rollouts {arm}", disable=not progress,
              leave=False) as bar:
        for task in tasks:
            done[task[:2]] = _finished(out, *task[:2], fp, strict) or write_shard(ctx, cfg, out, task, fp)
            bar.update(len(task[3]))
    records = list(done.values())
    fired = sum(r["fired"] for r in records)
    if not fired:
        raise VlmrError(f"the reward of arm {arm!r} never fired in {len(paths) * cfg.episodes_per_agent} episodes of "
                        "its agents: there is nothing to refine on; play more episodes (rollouts.episodes_per_agent)")
    splits = {s: [r for (s2, _), r in sorted(done.items()) if s2 == s and r["samples"]] for s in SPLITS}
    for split in SPLITS:
        if not splits[split]:
            quality_issue(f"rollouts {out}: the {split} split has no frames; play more episodes "
                          f"(rollouts.episodes_per_agent) or give it a larger share (rollouts.splits.{split})", strict)
    ranges = [agent_seeds(cfg, s) for s in paths]
    cfg_dict = config_to_dict(cfg)
    write_manifest(out, name=f"rollouts_{arm}", source="rollouts", goals=goals, image_size=image_size,
                   view=(manifest or {}).get("view", "egocentric"), splits=splits, config=cfg_dict,
                   run=run_info(cfg_dict, cfg.seed_start),
                   extra={"fingerprint": fp, "holdout_goals": list((manifest or {}).get("holdout_goals") or []),
                          "env_id": trained_on["env_id"], "env_seed_range": [min(r.start for r in ranges),
                                                                              max(r.stop - 1 for r in ranges)],
                          "parent": {"compare_dir": str(compare_dir), "arm": arm, "reward_model": str(reward_model),
                                     "reward_model_id": rm.model_id, "calibration": calibration,
                                     "calibration_sha256": identity["calibration_sha256"],
                                     "agents": {str(s): {"path": str(p), "sha256": identity["agents"][str(s)]}
                                                for s, p in paths.items()},
                                     "trained_on_reward_model_id": trained_on["reward_model_id"],
                                     "dataset": str(data_dir) if data_dir else None,
                                     "dataset_manifest_sha256": sha256_file(Path(data_dir) / MANIFEST_FILE)
                                     if data_dir else None},
                          "rollouts": {"episodes": sum(r["episodes_played"] for r in records),
                                       "frames_scored": sum(r["frames_scored"] for r in records), "fired": fired,
                                       "negatives": sum(r["negatives"] for r in records)}})
    counts = " / ".join(f"{s} {sum(r['samples'] for r in splits[s])}" for s in SPLITS)
    print(f"rollouts {arm}: {fired} fired frames in {len(paths) * cfg.episodes_per_agent} episodes of {len(paths)} "
          f"agent(s); {counts} frames -> {out}")
    return out
