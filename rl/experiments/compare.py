"""`vlmr compare`: PPO agents on different rewards, N seeds each, judged by ground-truth success.

    vlmr compare configs/rl/compare_babyai.yaml                      # run what is missing, then aggregate
    vlmr compare configs/rl/compare_babyai.yaml --arm adapted --seed 1   # one shard (a cluster job), no report
    vlmr compare configs/rl/compare_babyai.yaml --aggregate          # merge finished shards into the report
    vlmr compare configs/rl/compare_babyai.yaml rl.total_timesteps=20000

Arms: `ground_truth` (no reward model: the env's own reward, the upper bound)
and one per entry of `reward_models` ({name: {reward_model: DIR, calibration:
FILE}}: zero_shot, adapted, any other reward-model directories). Every arm runs
the same PPO settings (`rl`), the same seeds and step budget; only the reward
differs. With goal_encoding=text every arm's policy gets its goal embeddings
from ONE model (`goal_model`, default: the first arm that has a reward model),
so that the goal input does not differ between arms either.

Each (arm, seed) run lives in OUT_DIR/runs/ARM/seed-S/ and writes result.json
last, atomically. A run whose result.json matches the current settings and
inputs (PPO config, reward-model identity, calibration file hash) is skipped;
a stale one is rerun. Outputs in OUT_DIR: results.json, report.md,
success_curves.png, reward_precision.png.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
from vlmr.rl.agent.ppo import PPOConfig, fingerprint
from vlmr.rl.experiments.stats import bootstrap_band, bootstrap_ci, nan_to_none, none_to_nan, normalized_auc

from vlmr.core.config import config_dataclass, config_to_dict, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, sha256_file

RESULTS_VERSION = 1


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
    bootstrap_samples: int = 10000  # resamples for the confidence intervals
    ci: float = 0.95  # confidence level

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


def run_config(cfg: CompareConfig, arm: Arm, seed: int) -> PPOConfig:
    return dataclasses.replace(cfg.rl, reward_model=arm.reward_model, calibration=arm.calibration, seed=seed,
                               goal_model=goal_model_for(cfg),
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


def run_all(cfg: CompareConfig, arms: list[str] | None = None, seeds: list[int] | None = None) -> int:
    from vlmr.rl.agent.ppo import train

    unknown = sorted(set(arms or []) - {a.name for a in cfg.arms})
    if unknown:
        raise VlmrError(f"--arm {unknown} not in the config's arms {[a.name for a in cfg.arms]}")
    todo = [(a, s) for a in cfg.arms if not arms or a.name in arms for s in (seeds if seeds else cfg.seeds)]
    ran = 0
    for k, (arm, seed) in enumerate(todo, 1):
        run = run_config(cfg, arm, seed)
        inputs = run_inputs(run)
        _, status = finished_result(run, inputs)
        if status == "done":
            print(f"compare [{k}/{len(todo)}] {arm.name} seed {seed}: done, skipped")
            continue
        note = " (stale result: settings or inputs changed)" if status == "stale" else ""
        print(f"compare [{k}/{len(todo)}] {arm.name} seed {seed}: running{note}")
        train(run, extra={"arm": arm.name, "seed": seed, "inputs": inputs})
        ran += 1
    return ran


# ------------------------------------------------------------------------------------------------ aggregation
def _stack(curves: list[list], width: int | None = None) -> np.ndarray:
    width = width or min(len(c) for c in curves)
    return np.stack([none_to_nan(c[:width]) for c in curves])


def summarize_arm(results: list[dict], num_samples: int, ci: float) -> dict:
    def ci_of(values):
        mean, lo, hi = bootstrap_ci(values, num_samples, ci)
        if np.sum(np.isfinite(np.asarray(values, dtype=float))) < 2:
            lo = hi = None  # one seed: no interval
        return {"mean": mean, "lo": lo, "hi": hi, "values": list(values)}

    final = [r["final_success_rate"] for r in results]
    auc = [normalized_auc(r["curves"]["eval_steps"], none_to_nan(r["curves"]["success_rate"])) for r in results]
    quality = [r.get("reward_quality") or {} for r in results]
    precision = [math.nan if q.get("precision") is None else q["precision"] for q in quality]
    recall = [math.nan if q.get("recall") is None else q["recall"] for q in quality]
    width = min(len(r["curves"]["eval_steps"]) for r in results)
    success = _stack([r["curves"]["success_rate"] for r in results], width)
    mean, lo, hi = bootstrap_band(success, min(num_samples, 2000), ci)
    summary = {
        "seeds": [r["seed"] for r in results], "final_success": ci_of(final),
        "final_success_mean": float(np.mean(final)),  # convenience for one-line summaries
        "auc": ci_of(auc),
        "reward_precision": ci_of(precision), "reward_recall": ci_of(recall),
        "sps": float(np.mean([r["sps"] for r in results])),
        "success_curve": {"env_steps": results[0]["curves"]["eval_steps"][:width], "mean": mean.tolist(),
                          "lo": lo.tolist(), "hi": hi.tolist()},
        "reward_model_id": results[0].get("reward_model_id"),
    }
    if any(r["curves"]["precision"] for r in results):
        pw = min(len(r["curves"]["precision"]) for r in results)
        p_mean, p_lo, p_hi = bootstrap_band(_stack([r["curves"]["precision"] for r in results], pw),
                                            min(num_samples, 2000), ci)
        summary["precision_curve"] = {"env_steps": results[0]["curves"]["rollout_steps"][:pw],
                                      "mean": p_mean.tolist(), "lo": p_lo.tolist(), "hi": p_hi.tolist()}
    return summary


def difference_ci(a: list[float], b: list[float], num_samples: int, ci: float, seed: int = 0):
    """Mean of a minus mean of b, with a bootstrap CI resampling each group's seeds independently."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float(a.mean() - b.mean()), None, None
    rng = np.random.default_rng(seed)
    diffs = (a[rng.integers(0, len(a), (num_samples, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (num_samples, len(b)))].mean(1))
    alpha = (1 - ci) / 2
    return float(a.mean() - b.mean()), float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))


def aggregate(cfg: CompareConfig) -> dict:
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
                         **summarize_arm(results, cfg.bootstrap_samples, cfg.ci)})
    if not arms:
        raise VlmrError(f"no finished runs under {out / 'runs'}; run `vlmr compare CONFIG` (or its shards) first")
    comparisons, by_name = {}, {a["name"]: a for a in arms}
    if "adapted" in by_name and "zero_shot" in by_name:
        for key in ("final_success", "auc"):
            d = difference_ci(by_name["adapted"][key]["values"], by_name["zero_shot"][key]["values"],
                              cfg.bootstrap_samples, cfg.ci)
            comparisons[f"adapted_minus_zero_shot/{key}"] = {"mean": d[0], "lo": d[1], "hi": d[2]}
    summary = nan_to_none({"version": RESULTS_VERSION, "config": config_to_dict(cfg), "seeds": cfg.seeds,
                           "arms": arms, "comparisons": comparisons, "missing": missing})
    atomic_write_json(out / "results.json", summary)
    plot_curves(summary, out)
    atomic_write_text(out / "report.md", report_markdown(summary, cfg))
    print(f"compare: {sum(len(a['seeds']) for a in arms)} runs over {len(arms)} arms"
          + (f", {len(missing)} missing" if missing else "") + f" -> {out / 'report.md'}")
    return summary


def _fmt(stat: dict | None, digits: int = 2) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    lo, hi = stat.get("lo"), stat.get("hi")
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{stat['mean']:.{digits}f}{ci}"


def report_markdown(summary: dict, cfg: CompareConfig) -> str:
    rl = cfg.rl
    pct = int(round(cfg.ci * 100))
    lines = [f"# Reward A/B comparison: {rl.env_id}", "",
             f"PPO, {rl.total_timesteps} env steps per run, seeds {summary['seeds']}, same settings for every arm; "
             f"only the reward differs. Success is the env's own success on held-out env seeds (from "
             f"{rl.eval_seed}); the final value uses {rl.final_eval_episodes} episodes. Brackets: {pct}% bootstrap "
             "CI over seeds." + (f" Env options: {rl.env_kwargs}." if rl.env_kwargs else ""), "",
             "| arm | reward | runs | final success | success AUC | reward precision | reward recall | SPS |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in summary["arms"]:
        name = arm["name"]
        reward = "env's own reward" if arm["reward_model"] is None else f"`{arm['reward_model']}`" + (
            " + calibration" if arm["calibration"] else "")
        lines.append(f"| {name} | {reward} | {len(arm['seeds'])}/{len(summary['seeds'])} | "
                     f"{_fmt(arm['final_success'])} | {_fmt(arm['auc'])} | {_fmt(arm['reward_precision'])} | "
                     f"{_fmt(arm['reward_recall'])} | {arm['sps']:.0f} |")
    for key, d in summary["comparisons"].items():
        if d["lo"] is None:
            verdict = "one seed per arm: no confidence interval"
        else:
            verdict = ("better" if d["lo"] > 0 else "worse" if d["hi"] < 0 else "not distinguishable at this "
                       "number of seeds")
        lines += ["", f"**{key}**: {_fmt(d)} ({verdict})."]
    lines += ["", "![success](success_curves.png)", "", "![precision](reward_precision.png)", "", "Notes:",
              "- success AUC: area under success rate vs env steps divided by the step range (mean success "
              "during training; rewards faster learning).",
              "- reward precision / recall: on the policy's own training rollouts, how often the VLM reward's "
              "'goal reached' agreed with the env's success (pooled per run). Low precision is reward hacking: "
              "the policy is paid for frames that are not successes."]
    if any(arm["reward_model"] and _offline_arch(arm["reward_model"]) for arm in summary["arms"]):
        lines.append("- These reward models are small CLIPs from vlmr's offline configs; their base is "
                     "pretrained by vlmr on a generated shapes corpus, a stand-in for web-scale CLIP.")
    if summary["missing"]:
        lines.append("- Missing or stale runs (not in the table): " + ", ".join(
            f"{m['arm']} seed {m['seed']} ({m['status']})" for m in summary["missing"]))
    return "\n".join(lines) + "\n"


def _offline_arch(model_dir: str) -> bool:
    try:
        return str(read_json(Path(model_dir) / "reward_model.json").get("arch", "")).startswith("vlmr-")
    except (VlmrError, AttributeError):
        return False


def plot_curves(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for filename, key, ylabel in (("success_curves.png", "success_curve", "held-out success rate"),
                                  ("reward_precision.png", "precision_curve", "VLM reward precision")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, arm in enumerate(summary["arms"]):  # colour by arm index: the same arm, the same colour in both
            curve = arm.get(key)
            if not curve:
                continue
            x, mean = np.asarray(curve["env_steps"]), none_to_nan(curve["mean"])
            ax.plot(x, mean, label=arm["name"], color=f"C{i}")
            ax.fill_between(x, none_to_nan(curve["lo"]), none_to_nan(curve["hi"]), alpha=0.2, color=f"C{i}")
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no VLM-reward arm", ha="center", va="center", transform=ax.transAxes)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(out / filename, buf.getvalue())


# ------------------------------------------------------------------------------------------------ CLI
def compare(cfg: CompareConfig, arm: list[str] | None = None, seed: list[int] | None = None,
            aggregate_only: bool = False) -> dict | None:
    """Run the missing (arm, seed) runs; aggregate unless this is a shard (--arm / --seed)."""
    if not aggregate_only:
        run_all(cfg, arm, seed)
        if arm or seed:
            print("compare: shard finished; merge with `vlmr compare CONFIG --aggregate`")
            return None
    return aggregate(cfg)


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--arm", action="append", help="run only this arm (repeatable); no report")
        parser.add_argument("--seed", action="append", type=int, help="run only this seed (repeatable); no report")
        parser.add_argument("--aggregate", action="store_true", help="only merge finished runs into the report")

    return stage_main(argv, CompareConfig, lambda cfg, arm, seed, aggregate: compare(cfg, arm, seed, aggregate),
                      "vlmr compare", "A/B comparison of rewards with PPO agents, N seeds per arm.", extra,
                      kind="rl")
