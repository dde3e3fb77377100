"""`vlmr pipeline CONFIG`: the whole chain, skipping every stage whose outputs are complete and current.

    vlmr pipeline configs/pipeline/babyai_demo.yaml                 # what `make demo` runs
    vlmr pipeline configs/pipeline/babyai_demo.yaml --force calibrate_adapted
    vlmr pipeline configs/pipeline/babyai_demo.yaml --stop-after base  # data and base model only
    vlmr pipeline configs/pipeline/crafter.yaml

Stages: collect the shapes corpus and the domain data; pretrain the base CLIP on
shapes (full training); export the zero-shot reward model (base weights, domain
goal set, no training); LoRA-adapt the base on the domain; LoRA-adapt a randomly
initialised model (the control arm); calibrate each reward model; `vlmr evaluate`
them side by side; `vlmr compare` them with PPO; write runs/<name>/report.md.

A stage is skipped when runs/<name>/pipeline/<stage>.json records the same
fingerprint (its config plus the identities of its inputs) and its outputs are
still valid. A stage whose config or inputs changed is rerun, and so is
everything downstream of it, because the fingerprints chain.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import yaml

from vlmr.core.config import build_config, config_dataclass, load_config, resolve_config, resolve_config_refs
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, atomic_write_text, canonical_json, read_json, sha256_text


@config_dataclass
class StageSection:
    config: str  # the stage's own YAML config
    set: dict[str, Any] = dataclasses.field(default_factory=dict)  # values merged over that YAML (nested mappings)


@config_dataclass
class PipelineConfig:
    # keys naming other configs: relative paths in a YAML file resolve next to that file
    CONFIG_REFS: ClassVar[tuple[str, ...]] = tuple(f"{s}.config" for s in
                                                   ("shapes", "domain", "base", "adapt", "calibrate", "compare"))
    name: str  # run name: outputs go to {runs_dir}/{name}/
    shapes: StageSection  # collection of the generic shapes corpus (configs/data/shapes.yaml)
    domain: StageSection  # collection of the in-domain data (configs/data/babyai_goto.yaml)
    base: StageSection  # full pretraining of the base CLIP on shapes (configs/finetune/base_shapes_full.yaml)
    adapt: StageSection  # LoRA adaptation on the domain (configs/finetune/babyai_lora.yaml)
    calibrate: StageSection  # calibration of every reward model (configs/calibrate/babyai.yaml)
    compare: StageSection | None = None  # PPO A/B comparison (configs/rl/compare_babyai.yaml); null = skip
    runs_dir: str = "runs"  # parent folder of the run
    data_dir: str = "data"  # parent folder of the datasets
    arch: str = "vlmr-small"  # architecture of every model in the chain
    image_size: int = 112  # the architecture's input size; the shapes corpus is rendered at it
    frame_size: int | None = None  # size the domain frames (data and PPO's reward view) are rendered at, resized to
    # image_size by the reward model; null = image_size. 96 for a 112 px, 16 px patch model puts grid-world cells
    # off the patch grid (at 112 px each BabyAI cell is exactly one patch; see README, scaling study)
    workers: int = 1  # collection processes
    control: bool = True  # also adapt a randomly initialised model, to separate pretraining from adaptation
    goal_templates: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # prompts per goal family,
    # with {color} and {type} ("a {color} {type} right in front of you"); every reward model uses them
    base_pretrained: str | None = None  # a base CLIP to start from instead of pretraining one on shapes: an
    # open_clip tag of `arch` ("openai", "laion2b_s34b_b79k") or a checkpoint file (e.g. another chain's
    # base); skips the shapes stages


STAGES = ("collect_shapes", "collect_domain", "base", "zero_shot", "adapted", "control", "calibrate_zero_shot",
          "calibrate_adapted", "calibrate_control", "evaluate", "compare")


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_config(cls, section: StageSection, wiring: dict, what: str):
    """The stage's YAML, with the pipeline's `set` values and then its wiring (paths between stages) on top."""
    try:
        path = resolve_config(section.config)
    except VlmrError as e:
        raise VlmrError(f"pipeline stage {what}: {e}") from None
    data = yaml.safe_load(path.read_text()) or {}
    resolve_config_refs(data, getattr(cls, "CONFIG_REFS", ()), path.parent)
    return build_config(cls, deep_merge(deep_merge(data, section.set), wiring), f"{path} (pipeline stage {what})")


class StageRunner:
    """Runs stages in order; records each one's fingerprint, wall time and one-line summary."""

    def __init__(self, run_dir: Path, force: set[str], stop_after: str | None = None):
        self.state_dir = run_dir / "pipeline"
        self.force = force
        self.stop_after = stop_after
        self.rows: list[dict] = []

    def run(self, name: str, fingerprint: dict, valid: Callable[[], bool], body: Callable[[], str]) -> str:
        fp = sha256_text(canonical_json(fingerprint))
        marker = self.state_dir / f"{name}.json"
        if name not in self.force and marker.is_file():
            old = read_json(marker, "pipeline stage record")
            if old.get("fingerprint") == fp and _safe(valid):
                print(f"[{name}] up to date, skipped ({old.get('summary', '')})", flush=True)
                self.rows.append({**old, "stage": name, "skipped": True})
                self._maybe_stop(name)
                return fp
        print(f"[{name}] running", flush=True)
        atomic_write_json(self.state_dir / "started" / f"{name}.json", {"stage": name, "fingerprint": fp})
        t0 = time.perf_counter()
        summary = body()
        row = {"stage": name, "fingerprint": fp, "summary": summary, "wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_json(marker, row)
        print(f"[{name}] done in {row['wall_s']:.0f} s: {summary}", flush=True)
        self.rows.append({**row, "skipped": False})
        self._maybe_stop(name)
        return fp

    def interrupted(self, name: str, fingerprint: dict) -> bool:
        """Whether the last attempt at this stage, with this very fingerprint, started and did not finish.

        Only then may a training stage resume its checkpoints; after a config change it starts over.
        """
        started = self.state_dir / "started" / f"{name}.json"
        if not started.is_file():
            return False
        fp = sha256_text(canonical_json(fingerprint))
        done = self.state_dir / f"{name}.json"
        finished = done.is_file() and read_json(done, "pipeline stage record").get("fingerprint") == fp
        return read_json(started, "pipeline stage record").get("fingerprint") == fp and not finished

    def _maybe_stop(self, name: str) -> None:
        if name == self.stop_after:
            raise StopPipeline(name)


class StopPipeline(Exception):
    """Raised after the stage named by --stop-after."""


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except (VlmrError, OSError, ValueError, KeyError):
        return False


def dataset_valid(path: Path) -> bool:
    from vlmr.core.dataset import SPLITS, read_manifest, split_shards

    manifest = read_manifest(path)
    return all(split_shards(path, s, manifest) for s in SPLITS)


def reward_model_valid(path: Path) -> bool:
    return (path / "reward_model.json").is_file()


def pipeline(cfg: PipelineConfig, force: set[str] = frozenset(), stop_after: str | None = None) -> Path | None:
    """Run the chain; returns the final report, or None when stopped early by `stop_after`."""
    try:
        return _pipeline(cfg, force, stop_after)
    except StopPipeline as stop:
        print(f"pipeline {cfg.name}: stopped after stage {stop}, as asked")
        return None


def _pipeline(cfg: PipelineConfig, force: set[str], stop_after: str | None) -> Path:
    from vlmr.calibrate.evaluate import evaluate
    from vlmr.calibrate.fit import CalibrateConfig, calibrate
    from vlmr.finetune.train import FinetuneConfig, finetune
    from vlmr.rl.collect.collect import CollectConfig, collect

    from vlmr.core.files import sha256_file

    run_dir = Path(cfg.runs_dir) / cfg.name
    runner = StageRunner(run_dir, set(force), stop_after)
    t_start = time.perf_counter()

    base_weights = check_base_pretrained(cfg) if cfg.base_pretrained else None  # fail before any work

    # ---- data: the generic corpus (unless the base comes ready-made) at the input size, the domain at frame_size
    data = {}
    sources = (("domain", cfg.domain),) if base_weights else (("shapes", cfg.shapes), ("domain", cfg.domain))
    for key, section in sources:
        out = Path(cfg.data_dir) / f"{cfg.name}_{key}"
        size = (cfg.frame_size or cfg.image_size) if key == "domain" else cfg.image_size
        ccfg = stage_config(CollectConfig, section, {"out_dir": str(out), "image_size": size, "overwrite": True},
                            f"collect_{key}")

        def body(ccfg=ccfg):
            manifest = read_json(Path(collect(ccfg, resume=True, workers=cfg.workers)) / "manifest.json")
            counts = "/".join(str(manifest["splits"][s]["samples"]) for s in ("train", "val", "test"))
            return f"{manifest['name']}: {counts} train/val/test frames, {len(manifest['goals'])} goals"

        runner.run(f"collect_{key}", dataclasses.asdict(ccfg), lambda out=out: dataset_valid(out), body)
        data[key] = out
    manifest_sha = {k: sha256_file(v / "manifest.json") for k, v in data.items()}

    # ---- models: base pretraining, zero-shot export, LoRA adaptation, random-init control
    def train_stage(stage: str, section: StageSection, wiring: dict, inputs: dict) -> Path:
        fcfg = stage_config(FinetuneConfig, section, {"name": f"{cfg.name}/{stage}", "output_dir": cfg.runs_dir,
                                                      **wiring}, stage)
        rm_dir = run_dir / stage / "reward_model"
        fingerprint = {"config": dataclasses.asdict(fcfg), "inputs": inputs}
        # resume only an interrupted attempt at this same stage config; a changed stage starts over
        run_cfg = dataclasses.replace(fcfg, resume=fcfg.resume and runner.interrupted(stage, fingerprint))

        def body():
            s = finetune(run_cfg, progress=False)
            val = s.get("val", {})
            own, mean = val.get("val/own_goal_auroc"), val.get("val/auroc_mean")
            what, auroc = ("own-goal", own) if own is not None and own == own else ("mean per-goal", mean)
            return f"{s['steps']} steps ({s['mode']}), {s['images_per_s'] or 0:.0f} img/s, val {what} AUROC {_f3(auroc)}"

        runner.run(stage, fingerprint, lambda: reward_model_valid(rm_dir), body)
        return rm_dir

    if base_weights:
        base_ckpt, base_identity = base_weights
    else:
        base_dir = train_stage("base", cfg.base, {"data": {"dir": str(data["shapes"])}, "lora": None,
                                                  "model": {"arch": cfg.arch, "pretrained": None}},
                               {"shapes": manifest_sha["shapes"]})
        base_ckpt = str((base_dir / "open_clip_model.safetensors").resolve())
        base_identity = sha256_file(base_ckpt)
    from vlmr.rl.envs.babyai_goals import goal_prompts

    domain_goals = read_json(data["domain"] / "manifest.json")["goals"]
    prompts = goal_prompts(domain_goals, cfg.goal_templates)
    domain_hashes = {"domain": manifest_sha["domain"], "base": base_identity}

    def on_domain(pretrained: str | None, **extra) -> dict:
        """Wiring shared by the domain models: same data, architecture and prompts; only the init differs."""
        return {"data": {"dir": str(data["domain"])}, **extra,
                "model": {"arch": cfg.arch, "pretrained": pretrained, "goal_prompts": prompts}}

    models = {"zero_shot": train_stage("zero_shot", cfg.adapt, on_domain(base_ckpt, trainer={"max_steps": 0}),
                                       domain_hashes),
              "adapted": train_stage("adapted", cfg.adapt, on_domain(base_ckpt), domain_hashes)}
    if cfg.control:
        models["control"] = train_stage("control", cfg.adapt, on_domain(None), {"domain": manifest_sha["domain"]})

    # ---- calibration of each reward model on the domain's val split, metrics on test
    from vlmr.finetune.reward_model import reward_model_id

    cal_reports = {}
    for arm, rm_dir in models.items():
        kcfg = stage_config(CalibrateConfig, cfg.calibrate, {"reward_model": str(rm_dir), "data": str(data["domain"]),
                                                             "out": None}, f"calibrate_{arm}")

        def body(kcfg=kcfg):
            view, m = headline(calibrate(kcfg, progress=False)["metrics"]["macro"])
            return "{} test precision {:.3f} recall {:.3f} AUROC {}".format(
                view, m.get("precision") or 0, m.get("recall") or 0, _f3(m.get("auroc")))

        runner.run(f"calibrate_{arm}", {"config": dataclasses.asdict(kcfg), "model": reward_model_id(rm_dir),
                                        "domain": manifest_sha["domain"]},
                   lambda rm_dir=rm_dir: _calibration_current(rm_dir), body)
        cal_reports[arm] = rm_dir / "calibration" / "report.md"

    # ---- offline A/B: every reward model on the domain's test split
    eval_json = run_dir / "evaluate" / "results.json"
    model_list = [{"dir": str(d), "calibration": str(d / "calibration.json"), "name": arm} for arm, d in models.items()]

    def eval_body():
        res = evaluate(model_list, str(data["domain"]), "test", out=str(eval_json), progress=False)
        heads = {m["name"]: headline(m["metrics"]["macro"]) for m in res["models"]}
        return ", ".join(f"{k} {view} AUROC {_f3(m.get('auroc'))}" for k, (view, m) in heads.items())

    runner.run("evaluate", {"models": {arm: reward_model_id(d) for arm, d in models.items()},
                            "calibrations": {arm: sha256_file(d / "calibration.json") for arm, d in models.items()},
                            "domain": manifest_sha["domain"]}, eval_json.is_file, eval_body)

    # ---- RL: PPO agents on each reward, judged on ground-truth success
    compare_report = None
    if cfg.compare is not None:
        compare_report = run_compare(cfg, runner, run_dir, models)

    report = write_final_report(cfg, run_dir, runner.rows, cal_reports, eval_json, compare_report,
                                time.perf_counter() - t_start)
    print(f"pipeline {cfg.name}: {len(runner.rows)} stages in {time.perf_counter() - t_start:.0f} s; report: {report}")
    return report


def check_base_pretrained(cfg: PipelineConfig) -> tuple[str, str]:
    """(value for model.pretrained, identity for fingerprints) of a ready-made base; clear errors if unusable."""
    from vlmr.finetune.models import check_architecture, register_model_configs, resolve_pretrained

    from vlmr.core.files import sha256_file

    register_model_configs()
    check_architecture(cfg.arch)
    value, kind = resolve_pretrained(cfg.arch, cfg.base_pretrained)
    if kind != "file":
        return value, f"{cfg.arch}:{value}"
    path = str(Path(value).resolve())
    return path, sha256_file(path)


def headline(macro: dict) -> tuple[str, dict]:
    """The metrics a one-line summary shows: own-goal where frames have missions (BabyAI), else pooled (Crafter)."""
    own = macro.get("own_goal") or {}
    return ("own-goal", own) if own.get("auroc") is not None else ("pooled", macro.get("pooled") or {})


def _f3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _calibration_current(rm_dir: Path) -> bool:
    from vlmr.finetune.reward_model import reward_model_id

    from vlmr.core.calibration_file import read_calibration

    read_calibration(rm_dir / "calibration.json", model_id=reward_model_id(rm_dir))
    return True


def run_compare(cfg: PipelineConfig, runner: StageRunner, run_dir: Path, models: dict[str, Path]) -> Path:
    from vlmr.finetune.reward_model import reward_model_id
    from vlmr.rl.experiments.compare import CompareConfig, compare

    from vlmr.core.files import sha256_file

    out = run_dir / "compare"
    arms = {arm: {"reward_model": str(d), "calibration": str(d / "calibration.json")} for arm, d in models.items()}
    wiring = {"out_dir": str(out), "reward_models": arms}
    if cfg.frame_size:  # the agents' reward sees frames drawn the way the domain data was
        wiring["rl"] = {"image_size": cfg.frame_size}
    ccfg = stage_config(CompareConfig, cfg.compare, wiring, "compare")

    def body():
        res = compare(ccfg)
        return "final success " + ", ".join(f"{a['name']} {a['final_success_mean']:.2f}" for a in res["arms"])

    runner.run("compare", {"config": dataclasses.asdict(ccfg),
                           "models": {arm: reward_model_id(d) for arm, d in models.items()},
                           "calibrations": {arm: sha256_file(d / "calibration.json") for arm, d in models.items()}},
               lambda: (out / "results.json").is_file(), body)
    return out / "report.md"


def write_final_report(cfg, run_dir: Path, rows: list[dict], cal_reports: dict, eval_json: Path,
                       compare_report: Path | None, seconds: float) -> Path:
    from vlmr.calibrate.report import comparison_table

    lines = [f"# vlmr pipeline: {cfg.name}", "",
             "The base CLIP here was pretrained by vlmr on a synthetic corpus of captioned shapes. It is a stand-in "
             "for web-scale CLIP, not a claim about it.", "",
             "## Stages", "", "| stage | wall s | skipped | summary |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r.get('wall_s', 0):.0f} | {'yes' if r['skipped'] else 'no'} | {r['summary']} |"
              for r in rows]
    lines += ["", f"Total wall time of this invocation: {seconds:.0f} s.", "", "## Prompts", "",
              "Every reward model of this run turns a goal into captions with these templates (ensembled), "
              "the reward model's own templates for any other goal:", ""]
    lines += [f"- {family}: " + "; ".join(f'"{t}"' for t in templates) for family, templates in
              cfg.goal_templates.items()] or ["- none: the goal sentence itself"]
    lines += ["", "## Reward quality (test split)", ""]
    lines += ["```", comparison_table(read_json(eval_json)["models"]), "```", ""]
    lines += [f"- calibration report, {arm}: [{p.relative_to(run_dir)}]({p.relative_to(run_dir)})"
              for arm, p in cal_reports.items()]
    if compare_report is not None:
        rel = compare_report.relative_to(run_dir)
        lines += ["", "## Agents (ground-truth success)", "", f"See [{rel}]({rel}).", ""]
        if compare_report.is_file():
            lines += [compare_report.read_text()]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmr pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="pipeline YAML, or a shipped pipeline's name (babyai_demo, crafter, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the pipeline config")
    parser.add_argument("--force", nargs="*", default=[], help="stages to rerun even if up to date")
    parser.add_argument("--stop-after", metavar="STAGE", choices=STAGES, help="stop once this stage is done")
    args = parser.parse_args(argv)
    pipeline(load_config(PipelineConfig, args.config, args.overrides, kind="pipeline"), set(args.force), args.stop_after)
    return 0
