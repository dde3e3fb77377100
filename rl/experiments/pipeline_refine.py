"""The pipeline's on-policy stages: `refine` the adapted reward model on its agents' rollouts, then
`compare_refined`, PPO agents on the refined reward beside the other arms.

    refine:                              # in a pipeline YAML (configs/pipeline/babyai_demo.yaml)
      config: ../refine/babyai_refine.yaml
      set: {rounds: 1}

Inside a pipeline the refine config's paths are the chain's own: the compare's agents of arm `adapted`,
its reward model and calibration, the domain data, runs/<name>/refine/. Its fine-tune is the pipeline's
`adapt` stage (same YAML and `set`, so each size of a scaling study keeps its settings) with the refine
config's `finetune.set` on top; its calibration is the pipeline's `calibrate` stage.

The refined arm's agents train in the same compare folder, so the arms already trained are reused and
results.json holds every arm; `refined - adapted` joins the contrasts (same seeds: paired).

With `refine_rounds: N` (PipelineConfig) the loop goes on: round k >= 2 (stages `refine_k`, then
`compare_refined_k`, arm `refined_k`, folder refine_k/) replays the agents trained on round k-1's reward,
refines round k-1's model on their frames and trains agents on the result, with `refined_k - refined_{k-1}`
among the contrasts. Each round's agents find the frames the previous reward still pays for wrongly (on
Crafter: a sapling in the inventory for "collect wood"), so each round is calibrated where the next agents
train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlmr.rl.experiments.stage_runner import StageRunner, deep_merge

from vlmr.core.config import build_config, read_config_data
from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json, sha256_file

ARM, REFINED = "adapted", "refined"


def refined_arm(k: int) -> str:
    """The compare arm of on-policy round k: `refined`, then `refined_2`, `refined_3`, ..."""
    return REFINED if k == 1 else f"{REFINED}_{k}"


def refine_stages(k: int) -> tuple[str, str]:
    """The pipeline stages of on-policy round k: (refine, compare of its agents)."""
    return ("refine", "compare_refined") if k == 1 else (f"refine_{k}", f"compare_refined_{k}")


def refine_config(cfg, run_dir: Path, models: dict[str, Path], domain: Path, k: int = 1):
    """The RefineConfig of on-policy round k of a chain: the refine YAML and its `set`, wired to the chain's
    outputs (PipelineConfig already refuses a refine section without a compare). `models` holds the arm
    round k refines: `adapted` for round 1, round k-1's refined arm after it."""
    from vlmr.rl.experiments.refine import RefineConfig

    arm = ARM if k == 1 else refined_arm(k - 1)
    if arm not in models:
        raise VlmrError(f"pipeline {cfg.name}: the refine stage refines arm {arm!r}, which this chain has no model for")
    path, data = read_config_data(RefineConfig, cfg.refine.config)
    data = deep_merge(data, cfg.refine.set)
    own = (data.pop("finetune", None) or {}).get("set") or {}  # the chain's adapt section, with this on top
    data.pop("calibrate", None)
    rm = models[arm]
    wiring = {"compare_dir": str(run_dir / "compare"), "arm": arm, "parent": str(rm),
              "calibration": str(rm / "calibration.json"), "data": str(domain),
              "out_dir": str(run_dir / refine_stages(k)[0]),
              "strict": cfg.strict, "finetune": {"config": cfg.adapt.config, "set": deep_merge(cfg.adapt.set, own)},
              "calibrate": {"config": cfg.calibrate.config, "set": cfg.calibrate.set}}
    return build_config(RefineConfig, deep_merge(data, wiring), f"{path} (pipeline stage {refine_stages(k)[0]})")


def run_refine(cfg, runner: StageRunner, run_dir: Path, models: dict[str, Path], domain: Path, k: int = 1) -> Path:
    """The refine stage of on-policy round k; returns the refined reward-model dir."""
    from vlmr.rl.collect.rollout_agents import find_agents
    from vlmr.rl.experiments.pipeline_stages import _model_identities
    from vlmr.rl.experiments.refine import refine

    rcfg = refine_config(cfg, run_dir, models, domain, k)
    refined = Path(rcfg.out_dir) / f"round_{rcfg.rounds}" / "finetune" / "reward_model"
    agents = find_agents(rcfg.compare_dir, rcfg.arm)  # a compare without recorded agents fails here, in one line
    fingerprint = {"config": dataclasses.asdict(rcfg), **_model_identities({rcfg.arm: models[rcfg.arm]}),
                   "agents": {f"seed-{seed}": sha256_file(p) for seed, p in agents.items()},
                   "domain": sha256_file(domain / "manifest.json")}

    def body():
        refine(rcfg)
        summary = read_json(Path(rcfg.out_dir) / "summary.json", "refine summary")
        counts = summary["rounds"][-1]["rollout_counts"]
        return (f"{rcfg.rounds} round(s); last: {counts['fired']} fired frames in {counts['episodes']} episodes; "
                + "; ".join(s["summary"] for s in summary["steps"] if s["stage"].endswith("_calibrate"))[-160:])

    def valid():
        from vlmr.rl.experiments.pipeline_stages import _calibration_current

        return _calibration_current(refined)

    runner.run(refine_stages(k)[0], fingerprint, valid, body)
    return refined


def refined_arms(ccfg, refined: dict[str, Path]):
    """The compare config with the refined arms added (in round order), each contrasted with the arm it refined."""
    from vlmr.rl.experiments.compare import ArmConfig

    arms, contrasts, previous = dict(ccfg.reward_models), list(ccfg.contrasts), ARM
    for name, rm in refined.items():
        arms[name] = ArmConfig(reward_model=str(rm), calibration=str(rm / "calibration.json"))
        if (name, previous) not in contrasts:
            contrasts.append((name, previous))
        previous = name
    # added last, so the default goal model (the first reward arm) stays the one the other arms' agents used
    return dataclasses.replace(ccfg, reward_models=arms, contrasts=contrasts)
