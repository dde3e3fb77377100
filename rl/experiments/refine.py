"""`vlmr refine CONFIG`: refine a reward model on the frames its trained agents actually visit.

    vlmr refine configs/refine/babyai_refine.yaml         # after `vlmr pipeline babyai_demo`
    vlmr refine babyai_refine rounds=2 mix_ratio=0.5 rollouts.episodes_per_agent=128
    vlmr refine babyai_refine --force round_1_calibrate   # rerun one step (and what follows)
    python -c "from vlmr.rl.experiments.refine import RefineConfig, refine; from vlmr.core.config import \
        load_config; print(refine(load_config(RefineConfig, 'babyai_refine', kind='refine')))"

A reward model is calibrated on scripted-bot frames, but PPO agents visit other frames, where it can pay
for the wrong ones. One round:

  round_R/rollouts/      the arm's agents replayed with the round's reward; every frame where it fired and
                         a sample of the others, labelled by the env (rl/collect/rollouts.py)
  round_R/finetune/      a NEW LoRA run starting from the parent's adapter (finetune `init_adapter`) on the
                         original data plus the rollouts (`data.mix_dir`; `mix_ratio` of each batch). Its model
                         section (architecture, base weights, prompts, negatives) is the parent's.
  round_R/finetune/reward_model/calibration.json
                         calibration on the original val split plus the rollouts' (`extra_data`)

Round 1's parent and reward are the arm's reward model and calibration (checked to be the ones its agents
trained on). Round R > 1 starts from round R-1's refined model, and records the SAME agents with round
R-1's refined model as their reward: agents trained on each refined model would take a compare per round,
which is the pipeline's to run. Outputs in out_dir: the rounds, `refined` (a link to the last round's
reward-model dir, which holds its calibration.json) and summary.json. Each step is skipped when its
record (out_dir/pipeline/STEP.json) matches its config and inputs, as pipeline stages are (StageRunner).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field
from vlmr.rl.collect.rollout_agents import arm_reward, find_agents
from vlmr.rl.collect.rollouts import RolloutConfig, record_rollouts
from vlmr.rl.experiments.stage_runner import StageRunner, StageSection, stage_config

from vlmr.core.config import PositiveInt, config_dataclass, config_to_dict, stage_main
from vlmr.core.dataset import MANIFEST_FILE, SPLITS, check_goal_sets, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, check_writable, read_json, sha256_file
from vlmr.core.reporting import fmt

SUMMARY_VERSION = 1
STEPS = ("rollouts", "finetune", "calibrate")


@config_dataclass
class RefineConfig:
    # keys naming other configs: relative paths in a YAML file resolve next to that file
    CONFIG_REFS: ClassVar[tuple[str, ...]] = ("finetune.config", "calibrate.config")
    compare_dir: str  # a finished `vlmr compare` run folder; its arm's agents (runs/ARM/seed-S/agent.pt) are replayed
    data: str  # the dataset the parent was fine-tuned and calibrated on; its goal set labels the rollouts
    finetune: StageSection  # the LoRA fine-tune config (configs/finetune/babyai_lora.yaml) and `set` overrides
    calibrate: StageSection  # the calibration config (configs/calibrate/babyai_goto.yaml) and `set` overrides
    out_dir: str = "runs/refine"  # round_R/{rollouts,finetune}/, refined, summary.json, pipeline/ (step records)
    arm: str = "adapted"  # the compare arm whose reward model is refined
    parent: str | None = None  # the arm's reward-model dir (its adapter); null = the path its agents recorded
    calibration: str | None = None  # the arm's calibration.json; null = the path its agents recorded
    rollouts: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)  # episodes, negatives, splits, seeds
    mix_ratio: Annotated[float, Field(ge=0, le=1)] = 0.25  # share of rollout frames in each training batch, in [0, 1]
    rounds: PositiveInt = 1  # refinement rounds; round R > 1 starts from round R-1's model (module docstring)
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')


def step_names(rounds: int) -> list[str]:
    return [f"round_{r}_{step}" for r in range(1, rounds + 1) for step in STEPS]


def parent_model(parent: Path) -> dict:
    """The fine-tune `model` section that rebuilds the parent: its architecture, base weights and prompts."""
    from vlmr.finetune.reward_model import read_spec

    spec = read_spec(parent)
    base = str((parent / spec.pretrained).resolve()) if spec.pretrained_sha256 else spec.pretrained
    return {"arch": spec.arch, "pretrained": base, "templates": spec.templates, "goal_prompts": spec.goal_prompts,
            "negatives": spec.negatives}


def arm_parent(cfg: RefineConfig) -> tuple[Path, str | None, dict]:
    """(parent dir, its calibration, agent hashes): the arm's reward as its agents trained on it, checked."""
    from vlmr.finetune.reward_model import reward_model_id
    from vlmr.rl.agent.policy import load_agent

    paths = find_agents(cfg.compare_dir, cfg.arm)
    trained_on = arm_reward({seed: load_agent(p)[1] for seed, p in paths.items()}, cfg.arm)
    parent = Path(cfg.parent or trained_on["reward_model"])
    calibration = cfg.calibration or trained_on["calibration"]
    if not (parent / "reward_model.json").is_file() or reward_model_id(parent) != trained_on["reward_model_id"]:
        raise VlmrError(f"parent {parent} is not the reward model the agents of arm {cfg.arm!r} trained on (model "
                        f"{trained_on['reward_model_id'][:12]}); set parent to that reward-model dir")
    if calibration and (not Path(calibration).is_file() or sha256_file(calibration) != trained_on["calibration_sha256"]):
        raise VlmrError(f"calibration {calibration} is not the one the agents of arm {cfg.arm!r} trained with; set "
                        "calibration to that file")
    return parent, calibration, {str(s): sha256_file(p) for s, p in paths.items()}


def rollouts_ready(path: Path) -> dict:
    """The rollouts' manifest, with the frames refinement needs: train (fine-tuning), val (the calibration fit)
    and test (calibration reports each dataset's test metrics)."""
    from vlmr.core.integrity import shard_problem

    manifest = read_manifest(path)
    for split in SPLITS:
        if not manifest["splits"].get(split, {}).get("samples"):
            raise VlmrError(f"rollouts {path} have no {split} frames ({manifest['rollouts']['fired']} fired frames in "
                            f"all); play more episodes (rollouts.episodes_per_agent) or raise rollouts.splits.{split}")
    problems = [p for s in manifest["splits"].values() for e in s["shards"] if (p := shard_problem(path / e["name"], e))]
    if problems:
        raise VlmrError(problems[0])
    return manifest


def step_configs(cfg: RefineConfig, rdir: Path, parent: Path, rollouts: Path):
    """(FinetuneConfig, CalibrateConfig) of a round: the stage YAMLs with the round's wiring on top."""
    from vlmr.calibrate.fit import CalibrateConfig
    from vlmr.finetune.train import FinetuneConfig

    fcfg = stage_config(FinetuneConfig, cfg.finetune, {
        "name": "finetune", "output_dir": str(rdir), "init_adapter": str(parent), "strict": cfg.strict,
        "model": parent_model(parent), "data": {"dir": cfg.data, "mix_dir": str(rollouts), "mix_ratio": cfg.mix_ratio}},
        f"{rdir.name}_finetune")
    kcfg = stage_config(CalibrateConfig, cfg.calibrate, {
        "reward_model": str(rdir / "finetune" / "reward_model"), "data": cfg.data, "extra_data": [str(rollouts)],
        "out": None, "strict": cfg.strict}, f"{rdir.name}_calibrate")
    return fcfg, kcfg


def _link(out: Path, target: Path) -> Path:
    """out/refined -> target, swapped in atomically (a relative link: the folder can move)."""
    link, tmp = out / "refined", out / ".refined.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, out), tmp)
    os.replace(tmp, link)
    return link


def refine(cfg: RefineConfig, force: set[str] = frozenset()) -> Path:
    """Run the rounds (skipping finished steps); returns the refined reward-model dir (with its calibration.json)."""
    from vlmr.calibrate.fit import METHOD_VERSION, calibrate
    from vlmr.finetune.reward_model import read_spec, reward_model_id
    from vlmr.finetune.train import finetune
    from vlmr.rl.experiments.pipeline_stages import _calibration_current, headline

    from vlmr.core.provenance import run_info

    unknown = sorted(set(force) - set(step_names(cfg.rounds)))
    if unknown:
        raise VlmrError(f"unknown step {', '.join(map(repr, unknown))}; the steps are {', '.join(step_names(cfg.rounds))}")
    out = check_writable(cfg.out_dir, "refine output folder")
    data = read_manifest(cfg.data)  # an incomplete dataset fails here, before any episode is played
    data_sha = sha256_file(Path(cfg.data) / MANIFEST_FILE)
    parent, calibration, agents = arm_parent(cfg)
    check_goal_sets(data["goals"], read_spec(parent).goals, cfg.data, f"parent {parent}", data.get("holdout_goals"))
    step_configs(cfg, out / "round_1", parent, out / "round_1" / "rollouts")  # a bad stage config fails here too
    runner = StageRunner(out, set(force))
    rounds = []
    for r in range(1, cfg.rounds + 1):
        rdir = out / f"round_{r}"
        rollouts, rm_dir = rdir / "rollouts", rdir / "finetune" / "reward_model"
        reward = {"model": reward_model_id(parent), "calibration": sha256_file(calibration) if calibration else None}

        # ---- rollouts: the same agents, rewarded by this round's parent
        def record(parent=parent, calibration=calibration, rollouts=rollouts):
            record_rollouts(cfg.rollouts, cfg.compare_dir, rollouts, cfg.arm, cfg.data, str(parent), calibration,
                            cfg.strict, progress=False)
            n = rollouts_ready(rollouts)
            return (f"{n['rollouts']['fired']} fired frames in {n['rollouts']['episodes']} episodes; "
                    + " / ".join(f"{s} {n['splits'][s]['samples']}" for s in SPLITS) + " frames")

        runner.run(f"round_{r}_rollouts", {"rollouts": config_to_dict(cfg.rollouts), "arm": cfg.arm, "agents": agents,
                                           "reward": reward, "data": data_sha},
                   lambda rollouts=rollouts: rollouts_ready(rollouts), record)
        rollouts_sha = sha256_file(rollouts / MANIFEST_FILE)

        # ---- fine-tune: a new run from the parent's adapter on the original data mixed with the rollouts
        fcfg, kcfg = step_configs(cfg, rdir, parent, rollouts)
        fingerprint = {"config": dataclasses.asdict(fcfg), "parent": reward["model"], "data": data_sha,
                       "rollouts": rollouts_sha}
        # resume only an interrupted attempt at this same step; a changed step starts over
        run_cfg = dataclasses.replace(fcfg, resume=fcfg.resume and runner.interrupted(f"round_{r}_finetune", fingerprint))

        def train(run_cfg=run_cfg):
            s = finetune(run_cfg, progress=False)
            return f"{s['steps']} steps from the parent's adapter; val own-goal AUROC {fmt(s['val'].get('val/own_goal_auroc'))}"

        runner.run(f"round_{r}_finetune", fingerprint, lambda rm_dir=rm_dir: (rm_dir / "reward_model.json").is_file(),
                   train)

        # ---- calibrate: on the original val split plus the rollouts' val split
        def fit(kcfg=kcfg):
            view, m = headline(calibrate(kcfg, progress=False)["metrics"]["macro"])
            return f"{view} test precision {fmt(m.get('precision'))} recall {fmt(m.get('recall'))} AUROC {fmt(m.get('auroc'))}"

        runner.run(f"round_{r}_calibrate", {"config": dataclasses.asdict(kcfg), "model": reward_model_id(rm_dir),
                                            "data": data_sha, "rollouts": rollouts_sha, "method": METHOD_VERSION},
                   lambda rm_dir=rm_dir: _calibration_current(rm_dir), fit)
        rounds.append({"round": r, "parent": str(parent), "parent_id": reward["model"], "reward_calibration": calibration,
                       "rollouts": str(rollouts), "rollout_counts": read_json(rollouts / MANIFEST_FILE)["rollouts"],
                       "reward_model": str(rm_dir), "model_id": reward_model_id(rm_dir),
                       "calibration": str(rm_dir / "calibration.json")})
        parent, calibration = rm_dir, str(rm_dir / "calibration.json")  # the next round starts from this one

    link = _link(out, parent)
    summary = {"version": SUMMARY_VERSION, "refined": {"reward_model": str(parent), "link": str(link),
                                                       "calibration": calibration, "model_id": reward_model_id(parent)},
               "rounds": rounds, "steps": runner.rows, "config": config_to_dict(cfg), "run": run_info(config_to_dict(cfg))}
    atomic_write_json(out / "summary.json", summary)
    print(f"refine {cfg.arm}: {cfg.rounds} round(s); refined reward model {parent} (link {link})")
    return parent


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--force", nargs="*", default=[], metavar="STEP",
                            help="steps to rerun even if up to date: round_R_rollouts, round_R_finetune, round_R_calibrate")

    return stage_main(argv, RefineConfig, lambda cfg, force: refine(cfg, set(force)), "vlmr refine",
                      "Refine a reward model on its trained agents' rollouts: record, fine-tune, recalibrate.", extra,
                      kind="refine")
