"""The stages of `vlmr pipeline`, each a call of one vlmr command with the chain's wiring on top of its config.

    data = collect_data(cfg, runner, shapes=True)        # {"shapes": DIR, "domain": DIR}
    models = train_models(cfg, runner, run_dir, data, manifest_sha, base_weights=None)
    calibrate_models(cfg, runner, models, data["domain"], manifest_sha["domain"])
    evaluate_models(runner, run_dir, models, data["domain"], manifest_sha["domain"])
    run_compare(cfg, runner, run_dir, models)

Each stage's fingerprint is its config plus the identities of its inputs (manifest hashes, reward-model ids,
calibration file hashes), so a changed upstream stage reruns everything downstream of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from vlmr.rl.experiments.stage_runner import StageRunner, StageSection, stage_config

from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json, sha256_file
from vlmr.core.reporting import fmt

if TYPE_CHECKING:  # only a type here; pipeline.py imports this module
    from vlmr.rl.experiments.pipeline import PipelineConfig

# the contrasts the compare stage reports when its config names none: what LoRA adaptation adds to the base
DEFAULT_CONTRASTS = [("adapted", "zero_shot")]


def dataset_valid(path: Path) -> bool:
    """Complete and intact: a shard damaged since collection reruns the collect stage, whose resume rewrites it."""
    from vlmr.core.dataset import SPLITS, read_manifest, split_shards
    from vlmr.core.integrity import shard_problem

    manifest = read_manifest(path)
    return (all(split_shards(path, s, manifest) for s in SPLITS)
            and not any(shard_problem(path / e["name"], e) for s in manifest["splits"].values() for e in s["shards"]))


def reward_model_valid(path: Path) -> bool:
    return (path / "reward_model.json").is_file()


def headline(macro: dict) -> tuple[str, dict]:
    """The metrics a one-line summary shows: own-goal where frames have missions (BabyAI), else pooled (Crafter)."""
    own = macro.get("own_goal") or {}
    return ("own-goal", own) if own.get("auroc") is not None else ("pooled", macro.get("pooled") or {})


def check_base_pretrained(cfg: PipelineConfig) -> tuple[str, str]:
    """(value for model.pretrained, identity for fingerprints) of a ready-made base; clear errors if unusable."""
    from vlmr.finetune.models import check_architecture, register_model_configs, resolve_pretrained

    register_model_configs()
    check_architecture(cfg.arch)
    value, kind = resolve_pretrained(cfg.arch, cfg.base_pretrained)
    if kind != "file":
        return value, f"{cfg.arch}:{value}"
    path = str(Path(value).resolve())
    return path, sha256_file(path)


# ------------------------------------------------------------------------------------------------ data
def collect_data(cfg: PipelineConfig, runner: StageRunner, shapes: bool) -> dict[str, Path]:
    """The generic corpus (when `shapes`) at the model's input size, the domain at frame_size."""
    from vlmr.rl.collect.collect import CollectConfig, collect, fingerprint

    data = {}
    sources = (("shapes", cfg.shapes), ("domain", cfg.domain)) if shapes else (("domain", cfg.domain),)
    for key, section in sources:
        out = Path(cfg.data_dir) / f"{cfg.name}_{key}"
        size = (cfg.frame_size or cfg.image_size) if key == "domain" else cfg.image_size
        ccfg = stage_config(CollectConfig, section, {"out_dir": str(out), "image_size": size, "overwrite": True,
                                                    "strict": cfg.strict},
                            f"collect_{key}")

        def body(ccfg=ccfg):
            manifest = read_json(Path(collect(ccfg, resume=True, workers=cfg.workers)) / "manifest.json")
            counts = "/".join(str(manifest["splits"][s]["samples"]) for s in ("train", "val", "test"))
            return f"{manifest['name']}: {counts} train/val/test frames, {len(manifest['goals'])} goals"

        # the collect fingerprint too: what decides shard content may change with vlmr, not only with the config
        runner.run(f"collect_{key}", {"config": dataclasses.asdict(ccfg), "content": fingerprint(ccfg)},
                   lambda out=out: dataset_valid(out), body)
        data[key] = out
    return data


# ------------------------------------------------------------------------------------------------ models
def train_stage(cfg: PipelineConfig, runner: StageRunner, stage: str, section: StageSection, wiring: dict,
                inputs: dict) -> Path:
    """One `vlmr finetune` run as a stage; returns its reward-model directory."""
    from vlmr.finetune.train import FinetuneConfig, finetune

    fcfg = stage_config(FinetuneConfig, section, {"name": f"{cfg.name}/{stage}", "output_dir": cfg.runs_dir,
                                                  "strict": cfg.strict, **wiring}, stage)
    rm_dir = Path(cfg.runs_dir) / cfg.name / stage / "reward_model"
    fingerprint = {"config": dataclasses.asdict(fcfg), "inputs": inputs}
    # resume only an interrupted attempt at this same stage config; a changed stage starts over
    run_cfg = dataclasses.replace(fcfg, resume=fcfg.resume and runner.interrupted(stage, fingerprint))

    def body():
        s = finetune(run_cfg, progress=False)
        val = s.get("val", {})
        own, mean = val.get("val/own_goal_auroc"), val.get("val/auroc_mean")
        what, auroc = ("own-goal", own) if own is not None else ("mean per-goal", mean)
        return f"{s['steps']} steps ({s['mode']}), {fmt(s['images_per_s'], 0)} img/s, val {what} AUROC {fmt(auroc)}"

    runner.run(stage, fingerprint, lambda: reward_model_valid(rm_dir), body)
    return rm_dir


def train_models(cfg: PipelineConfig, runner: StageRunner, data: dict[str, Path], manifest_sha: dict[str, str],
                 base_weights: tuple[str, str] | None) -> dict[str, Path]:
    """Base pretraining (unless base_weights is given), zero-shot export, LoRA adaptation, random-init control."""
    from vlmr.rl.envs.babyai_goals import goal_prompt_rules, goal_prompts

    if base_weights:
        base_ckpt, base_identity = base_weights
    else:
        base_dir = train_stage(cfg, runner, "base", cfg.base, {"data": {"dir": str(data["shapes"])}, "lora": None,
                                                               "model": {"arch": cfg.arch, "pretrained": None}},
                               {"shapes": manifest_sha["shapes"]})
        base_ckpt = str((base_dir / "open_clip_model.safetensors").resolve())
        base_identity = sha256_file(base_ckpt)
    from vlmr.core.dataset import seen_goals

    # the models' goal set is the seen goals: held-out goals are scored later as new goals, by the stored rule
    prompts = goal_prompts(seen_goals(read_json(data["domain"] / "manifest.json")), cfg.goal_templates)
    rules = goal_prompt_rules(cfg.goal_templates)  # stored with each model: new goals at load are prompted alike
    domain_hashes = {"domain": manifest_sha["domain"], "base": base_identity}

    def on_domain(pretrained: str | None, **extra) -> dict:
        """Wiring shared by the domain models: same data, architecture and prompts; only the init differs."""
        return {"data": {"dir": str(data["domain"])}, **extra,
                "model": {"arch": cfg.arch, "pretrained": pretrained, "goal_prompts": prompts,
                          "goal_templates": rules}}

    models = {"zero_shot": train_stage(cfg, runner, "zero_shot", cfg.adapt,
                                       on_domain(base_ckpt, trainer={"max_steps": 0}), domain_hashes),
              "adapted": train_stage(cfg, runner, "adapted", cfg.adapt, on_domain(base_ckpt), domain_hashes)}
    if cfg.control:
        models["control"] = train_stage(cfg, runner, "control", cfg.adapt, on_domain(None),
                                        {"domain": manifest_sha["domain"]})
    return models


# ------------------------------------------------------------------------------------------------ reward quality
def _calibration_current(rm_dir: Path) -> bool:
    from vlmr.finetune.reward_model import reward_model_id

    from vlmr.core.calibration_file import read_calibration

    read_calibration(rm_dir / "calibration.json", model_id=reward_model_id(rm_dir))
    return True


def calibrate_models(cfg: PipelineConfig, runner: StageRunner, models: dict[str, Path], domain: Path,
                     domain_sha: str) -> dict[str, Path]:
    """Calibrate each reward model on the domain's val split (metrics on test); returns their report.md paths."""
    from vlmr.calibrate.fit import METHOD_VERSION, CalibrateConfig, calibrate
    from vlmr.finetune.reward_model import reward_model_id

    reports = {}
    for arm, rm_dir in models.items():
        kcfg = stage_config(CalibrateConfig, cfg.calibrate, {"reward_model": str(rm_dir), "data": str(domain),
                                                             "out": None, "strict": cfg.strict}, f"calibrate_{arm}")

        def body(kcfg=kcfg):
            view, m = headline(calibrate(kcfg, progress=False)["metrics"]["macro"])
            return (f"{view} test precision {fmt(m.get('precision'))} recall {fmt(m.get('recall'))} "
                    f"AUROC {fmt(m.get('auroc'))}")

        runner.run(f"calibrate_{arm}", {"config": dataclasses.asdict(kcfg), "model": reward_model_id(rm_dir),
                                        "domain": domain_sha, "method": METHOD_VERSION},
                   lambda rm_dir=rm_dir: _calibration_current(rm_dir), body)
        reports[arm] = rm_dir / "calibration" / "report.md"
    return reports


def _model_identities(models: dict[str, Path]) -> dict:
    """What the evaluation and the agents depend on: each reward model's id and its calibration file's hash."""
    from vlmr.finetune.reward_model import reward_model_id

    return {"models": {arm: reward_model_id(d) for arm, d in models.items()},
            "calibrations": {arm: sha256_file(d / "calibration.json") for arm, d in models.items()}}


def evaluate_models(runner: StageRunner, run_dir: Path, models: dict[str, Path], domain: Path,
                    domain_sha: str, strict: bool = False, paraphrases: list[str] = ()) -> Path:
    """Offline A/B: every reward model on the domain's test split; returns the results.json path."""
    from vlmr.calibrate.evaluate import EvaluateConfig, EvaluatedModel, read_results
    from vlmr.rl.collect.rerender import evaluate  # the paraphrases' goal slots come from the env families

    eval_json = run_dir / "evaluate" / "results.json"
    cfg = EvaluateConfig(models=[EvaluatedModel(dir=str(d), calibration=str(d / "calibration.json"), name=arm)
                                 for arm, d in models.items()], data=str(domain), split="test", out=str(eval_json),
                         strict=strict, paraphrases=list(paraphrases))

    def body():
        res = evaluate(cfg, progress=False)
        heads = {m["name"]: headline(m["metrics"]["macro"]) for m in res["models"]}
        return ", ".join(f"{k} {view} AUROC {fmt(m.get('auroc'))}" for k, (view, m) in heads.items())

    fingerprint = {**_model_identities(models), "domain": domain_sha, "strict": strict}
    if paraphrases:  # chains without them keep their fingerprint
        fingerprint["paraphrases"] = list(paraphrases)
    runner.run("evaluate", fingerprint, lambda: read_results(eval_json), body)
    return eval_json


# ------------------------------------------------------------------------------------------------ agents
def run_compare(cfg: PipelineConfig, runner: StageRunner, run_dir: Path, models: dict[str, Path],
                domain: Path, refined: dict[str, Path] | None = None) -> Path:
    """PPO agents on each reward model (and the env's own reward), judged on ground-truth success. With `refined`
    ({arm: model} of the on-policy rounds so far) this is the last round's `compare_refined` stage: the same
    compare plus the refined arms."""
    from vlmr.rl.experiments.compare import CompareConfig, compare
    from vlmr.rl.experiments.pipeline_refine import refine_stages, refined_arms

    out = run_dir / "compare"
    arms = {arm: {"reward_model": str(d), "calibration": str(d / "calibration.json")} for arm, d in models.items()}
    wiring = {"out_dir": str(out), "reward_models": arms, "strict": cfg.strict}
    if rl := frames_like_domain(cfg.frame_size, domain):
        wiring["rl"] = rl
    ccfg = stage_config(CompareConfig, cfg.compare, wiring, "compare")
    if not ccfg.contrasts:
        ccfg = dataclasses.replace(ccfg, contrasts=DEFAULT_CONTRASTS)
    if ccfg.goals == "holdout":  # agents on the goals fine-tuning never saw: does adaptation help there too?
        ccfg = dataclasses.replace(ccfg, goals=holdout_missions(domain, ccfg.rl.env_id))
    if refined:
        ccfg = refined_arms(ccfg, refined)
        models = {**models, **refined}

    def body():
        res = compare(ccfg)
        return "final success " + ", ".join(f"{a['name']} {a['final_success_mean']:.2f}" for a in res["arms"])

    def valid():  # results.json is shared: after a rerun of `compare` alone it lacks the refined arms
        arms = [a["name"] for a in read_json(out / "results.json", "compare results")["arms"]]
        return set(refined or ()) <= set(arms)

    what = {k: v for k, v in dataclasses.asdict(ccfg).items() if k != "workers"}  # how runs are scheduled, not what
    runner.run(refine_stages(len(refined))[1] if refined else "compare",
               {"config": what, **_model_identities(models)}, valid, body)
    return out / "report.md"


def frames_like_domain(frame_size: int | None, domain: Path) -> dict:
    """The agents' `rl` settings under which their reward sees frames drawn as the domain data's were: the size
    they were drawn at and, when it is not the default, the view ({} when both are the defaults)."""
    rl = {"image_size": frame_size} if frame_size else {}
    view = read_json(domain / "manifest.json", "dataset manifest").get("view")
    if view not in (None, "egocentric"):  # every env's default view needs no option (and keeps fingerprints)
        rl["env_kwargs"] = {"view": view}
    return rl


def holdout_missions(domain: Path, env_id: str) -> list[str]:
    """The domain data's held-out goals that are missions of the agents' env (the data may span more families)."""
    from vlmr.rl.agent.vector_envs import env_goal_set

    held = read_json(domain / "manifest.json", "dataset manifest").get("holdout_goals") or []
    missions = env_goal_set(env_id) or []
    if not [g for g in held if g in missions]:
        raise VlmrError(f"compare goals=holdout: the domain data {domain} holds out no mission of {env_id} "
                        f"({len(held)} held-out goals); set the domain's holdout_goals (a list or "
                        "one_in_three_pairs) or drop compare.set.goals")
    return [g for g in held if g in missions]
