"""`vlmr compare`: PPO agents on different rewards, N seeds each, judged by ground-truth success.

    vlmr compare configs/rl/compare_babyai.yaml                      # run what is missing, then aggregate
    vlmr compare configs/rl/compare_babyai.yaml --arm adapted --seed 1   # one shard (a cluster job), no report
    vlmr compare configs/rl/compare_babyai.yaml --aggregate          # merge finished shards into the report
    vlmr compare configs/rl/compare_babyai.yaml rl.total_timesteps=20000
    vlmr compare configs/rl/compare_babyai.yaml --force              # rerun finished runs too
    vlmr compare configs/rl/compare_babyai.yaml workers=2            # two runs at once (2 cores: twice as fast)

Arms: `ground_truth` (no reward model: the env's own reward, the upper bound)
and one per entry of `reward_models` ({name: {reward_model: DIR, calibration:
FILE}}: zero_shot, adapted, any other reward-model directories). Every arm runs
the same PPO settings (`rl`), the same seeds and step budget; only the reward
differs. With goal_encoding=text every arm's policy gets its goal embeddings
from ONE model (`goal_model`, default: the first arm that has a reward model),
so that the goal input does not differ between arms either. `contrasts`
([[adapted, zero_shot], ...]) names the pairs of arms whose difference (a - b)
the report states with an interval over seeds, paired by seed where the two arms
share seeds; no other pair of arms is compared. Intervals (`interval`): t-interval
over seeds (default) or BCa bootstrap. With 3 or more reward-model arms the report
also sets agent success against reward quality (rl/experiments/capability.py).

Each (arm, seed) run lives in OUT_DIR/runs/ARM/seed-S/: the trained agent
(agent.pt, which `vlmr refine` replays) and result.json, written last, atomically. A run whose result.json matches the current settings and
inputs (PPO config, reward-model identity, calibration file hash) is skipped;
a stale one is rerun. Outputs in OUT_DIR: results.json, report.md,
success_curves.png, reward_precision.png (capability.png with 3+ reward arms).

This file: the config and the runs. compare_summary.py: per-arm statistics and
contrasts; compare_report.py: report.md and the plots.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from vlmr.rl.agent.ppo import PPOConfig, fingerprint
from vlmr.rl.experiments.capability import calibrated_quality, compare_capability
from vlmr.rl.experiments.compare_report import plot_curves, report_markdown
from vlmr.rl.experiments.compare_summary import contrasts, summarize_arm
from vlmr.rl.experiments.stats import METHODS, nan_to_none

from vlmr.core.config import config_dataclass, config_to_dict, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, atomic_write_text, check_writable, read_json, sha256_file

RESULTS_VERSION = 2  # 2: every metric a record with per-seed values (sps too), interval method, capability


@config_dataclass
class ArmConfig:
    reward_model: str  # reward-model dir
    calibration: str | None = None  # calibration.json for reward_model; null = the model's default tau, beta


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    reward_model: str | None  # None: the env's own reward
    calibration: str | None


@config_dataclass
class CompareConfig:
    out_dir: str = "runs/compare"  # results.json, report.md, plots, and runs/ARM/seed-S/
    ground_truth: bool = True  # include the `ground_truth` arm (the env's own reward, the upper bound)
    reward_models: dict[str, ArmConfig] = dataclasses.field(default_factory=dict)  # arm name -> reward model
    num_seeds: int = 3  # seeds per arm: first_seed .. first_seed + num_seeds - 1
    first_seed: int = 0  # first training seed
    goal_model: str | None = None  # reward-model dir for every arm's goal embeddings; null = the first arm's
    rl: PPOConfig = dataclasses.field(default_factory=PPOConfig)  # PPO settings shared by all arms
    contrasts: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # [a, b] pairs of arm names:
    # the report states a - b (final success, success AUC) with an interval, paired by seed; the only comparison
    interval: Literal["t", "bca"] = "t"  # interval over seeds: t-distribution, or BCa bootstrap (scipy)
    bootstrap_samples: int = 10000  # resamples for interval: bca
    ci: float = 0.95  # confidence level
    goals: str | list[str] | None = None  # train and evaluate agents only on episodes with these missions (BabyAI);
    # `holdout`: the domain data's held-out goals, resolved by `vlmr pipeline`; null = every mission of the env
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')
    workers: int = 1  # runs trained at once, each in its own process with cpu_count // workers torch threads
    # (unless rl.torch_threads is set); the same runs, but float rounding differs with the thread count

    def __post_init__(self):
        if not self.ground_truth and not self.reward_models:
            raise ValueError("no arms: set ground_truth: true and/or give reward_models {name: {reward_model: DIR}}")
        bad = [n for n in self.reward_models if n == "ground_truth" or not n or "/" in n or n.startswith(".")]
        if bad:
            raise ValueError(f"reward_models keys are arm (folder) names: not 'ground_truth', no '/', no leading "
                             f"'.', got {bad}")
        if self.rl.reward_model or self.rl.calibration:
            raise ValueError("rl.reward_model / rl.calibration are set per arm in reward_models, not in rl")
        if self.num_seeds < 1 or not 0 < self.ci < 1:
            raise ValueError("num_seeds must be >= 1 and ci in (0, 1)")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: the number of runs trained at once must be >= 1")
        names = [a.name for a in self.arms]
        unknown = sorted({n for pair in self.contrasts for n in pair} - set(names))
        if unknown:
            raise ValueError(f"contrasts name {unknown}, which are not arms of this config; its arms are {names} "
                             "(ground_truth when ground_truth: true, and the keys of reward_models)")
        if isinstance(self.goals, str) and self.goals != "holdout":
            raise ValueError(f"goals={self.goals!r}: give a list of goal sentences, or `holdout` inside a pipeline")
        same = [list(pair) for pair in self.contrasts if pair[0] == pair[1]]
        if same:
            raise ValueError(f"contrasts {same} compare an arm with itself; each pair names two different arms")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.num_seeds))

    @property
    def arms(self) -> list[Arm]:
        gt = [Arm("ground_truth", None, None)] if self.ground_truth else []
        return gt + [Arm(name, a.reward_model, a.calibration) for name, a in self.reward_models.items()]


# ------------------------------------------------------------------------------------------------ runs
def reward_model_identity(path: str | None) -> str | None:
    from vlmr.finetune.reward_model import reward_model_id

    return reward_model_id(path) if path else None


def goal_model_for(cfg: CompareConfig) -> str | None:
    if cfg.rl.goal_encoding != "text":
        return None
    model = cfg.goal_model or next((a.reward_model for a in cfg.arms if a.reward_model), None)
    if model is None:
        raise VlmrError("rl.goal_encoding=text needs a model for the goal embeddings and no arm has one: set "
                        "goal_model=DIR (a reward-model dir) or rl.goal_encoding=onehot")
    return model


def env_kwargs_for(cfg: CompareConfig) -> dict:
    """rl.env_kwargs, with the goal subset when `goals` names one."""
    if cfg.goals is None:
        return cfg.rl.env_kwargs
    if cfg.goals == "holdout":
        raise VlmrError("compare goals=holdout means the held-out goals of a pipeline's domain data: run it inside "
                        "`vlmr pipeline`, or list the goal sentences (goals=[...])")
    return {**cfg.rl.env_kwargs, "goals": list(cfg.goals)}


def run_config(cfg: CompareConfig, arm: Arm, seed: int) -> PPOConfig:
    return dataclasses.replace(cfg.rl, reward_model=arm.reward_model, calibration=arm.calibration, seed=seed,
                               goal_model=goal_model_for(cfg), strict=cfg.strict or cfg.rl.strict,
                               env_kwargs=env_kwargs_for(cfg),
                               out_dir=str(Path(cfg.out_dir) / "runs" / arm.name / f"seed-{seed}"))


def run_inputs(run: PPOConfig) -> dict:
    """What a run's result depends on besides its config: the identity of the files it reads."""
    for what, path in (("reward model", run.reward_model), ("goal model", run.goal_model)):
        if path and not Path(path).is_dir():
            raise VlmrError(f"{what} directory not found: {path}")
    if run.calibration and not Path(run.calibration).is_file():
        raise VlmrError(f"calibration file not found: {run.calibration}")
    return {"fingerprint": fingerprint(run), "reward_model_id": reward_model_identity(run.reward_model),
            "goal_model_id": reward_model_identity(run.goal_model),
            "calibration_sha256": sha256_file(run.calibration) if run.calibration else None}


def finished_result(run: PPOConfig, inputs: dict) -> tuple[dict | None, str]:
    """(result, status) with status 'done', 'missing' or 'stale' (made from other settings or files)."""
    path = Path(run.out_dir) / "result.json"
    if not path.is_file():
        return None, "missing"
    try:
        result = read_json(path, "run result")
    except VlmrError:
        return None, "stale"
    return (result, "done") if result.get("inputs") == inputs else (None, "stale")


def run_all(cfg: CompareConfig, arms: list[str] | None = None, seeds: list[int] | None = None,
            force: bool = False) -> int:
    from vlmr.rl.agent.ppo import train

    unknown = sorted(set(arms or []) - {a.name for a in cfg.arms})
    if unknown:
        raise VlmrError(f"--arm {unknown} not in the config's arms {[a.name for a in cfg.arms]}")
    todo = [(a, s) for a in cfg.arms if not arms or a.name in arms for s in (seeds if seeds else cfg.seeds)]
    jobs = []
    for k, (arm, seed) in enumerate(todo, 1):
        run = run_config(cfg, arm, seed)
        inputs = run_inputs(run)
        _, status = finished_result(run, inputs)
        if status == "done" and not force:
            print(f"compare [{k}/{len(todo)}] {arm.name} seed {seed}: done, skipped")
            continue
        note = {"stale": " (stale result: settings or inputs changed)", "done": " (--force)"}.get(status, "")
        jobs.append((f"compare [{k}/{len(todo)}] {arm.name} seed {seed}", note, run,
                     {"arm": arm.name, "seed": seed, "inputs": inputs}))
    pooled = cfg.workers > 1 and len(jobs) > 1
    for label, note, run, extra in jobs:  # one at a time: each line announces the run that starts now
        print(f"{label}: {'queued' if pooled else 'running'}{note}")
        if not pooled:
            train(run, extra=extra)
    if pooled:
        train_in_processes([(run, extra) for _, _, run, extra in jobs], cfg.workers)
    return len(jobs)


def train_in_processes(jobs: list[tuple[PPOConfig, dict]], workers: int) -> None:
    """Train runs `workers` at a time. One BabyAI run keeps about one core busy (its envs step in Python), so on 2
    cores two runs at once take the wall time of one (measured: README, clusters). Each run is seeded and writes its
    own folder, so the order they finish in changes nothing; a failed run cancels the queued ones and raises. With
    fewer torch threads a run's sums round differently, so its numbers are not bit-identical to a run alone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)  # two runs with all cores each would fight over them
    jobs = [(run if run.torch_threads else dataclasses.replace(run, torch_threads=threads), extra)
            for run, extra in jobs]
    # spawn, not fork: torch's thread pools and open file handles of this process must not leak into the workers
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_train_run, run, extra) for run, extra in jobs]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _exit_with_parent(parent: int) -> None:
    """A worker whose compare is killed (kill -9) stops too: a rerun would otherwise train its run beside it."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _train_run(run: PPOConfig, extra: dict) -> None:  # module level: the worker processes import it by name
    from vlmr.rl.agent.ppo import train

    train(run, extra=extra)


# ------------------------------------------------------------------------------------------------ aggregation
def aggregate(cfg: CompareConfig) -> dict:
    """Merge the finished runs into results.json, report.md and the plots; missing runs are listed, not fatal."""
    out = Path(cfg.out_dir)
    arms, missing = [], []
    for arm in cfg.arms:
        results = []
        for seed in cfg.seeds:
            run = run_config(cfg, arm, seed)
            result, status = finished_result(run, run_inputs(run))
            if result is None:
                missing.append({"arm": arm.name, "seed": seed, "status": status})
            else:
                results.append(result)
        if results:
            arms.append({"name": arm.name, "reward_model": arm.reward_model, "calibration": arm.calibration,
                         "test_quality": calibrated_quality(arm.calibration),
                         **summarize_arm(results, cfg.ci, cfg.interval, cfg.bootstrap_samples)})
    if not arms:
        raise VlmrError(f"no finished runs under {out / 'runs'}; run `vlmr compare CONFIG` (or its shards) first")
    comparisons = contrasts(cfg.contrasts, arms, cfg.ci, cfg.interval, cfg.bootstrap_samples)
    summary = nan_to_none({"version": RESULTS_VERSION, "config": config_to_dict(cfg), "seeds": cfg.seeds,
                           "interval": {"method": cfg.interval, "name": METHODS[cfg.interval], "ci": cfg.ci},
                           "arms": arms, "comparisons": comparisons, "capability": compare_capability(arms),
                           "missing": missing})
    atomic_write_json(out / "results.json", summary)
    plot_curves(summary, out)
    atomic_write_text(out / "report.md", report_markdown(summary, cfg))
    print(f"compare: {sum(len(a['seeds']) for a in arms)} runs over {len(arms)} arms"
          + (f", {len(missing)} missing" if missing else "") + f" -> {out / 'report.md'}")
    return summary


# ------------------------------------------------------------------------------------------------ CLI
def compare(cfg: CompareConfig, arm: list[str] | None = None, seed: list[int] | None = None,
            aggregate_only: bool = False, force: bool = False) -> dict | None:
    """Run the missing (arm, seed) runs (with force, every one); aggregate unless this is a shard (--arm / --seed)."""
    check_writable(cfg.out_dir, "compare output folder")  # before the first agent trains
    if not aggregate_only:
        run_all(cfg, arm, seed, force)
        if arm or seed:
            print("compare: shard finished; merge with `vlmr compare CONFIG --aggregate`")
            return None
    return aggregate(cfg)


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--arm", action="append", help="run only this arm (repeatable); no report")
        parser.add_argument("--seed", action="append", type=int, help="run only this seed (repeatable); no report")
        parser.add_argument("--aggregate", action="store_true", help="only merge finished runs into the report")
        parser.add_argument("--force", action="store_true",
                            help="rerun finished runs too (e.g. runs of an older vlmr, which saved no agent.pt)")

    return stage_main(argv, CompareConfig,
                      lambda cfg, arm, seed, aggregate, force: compare(cfg, arm, seed, aggregate, force),
                      "vlmr compare", "A/B comparison of rewards with PPO agents, N seeds per arm.", extra,
                      kind="rl")
