"""`vlmr scaling CONFIG`: the paper's scaling study. Reward quality (and agent success) against model size.

    vlmr scaling configs/pipeline/scaling.yaml            # every size, then results.json, *.png, report.md
    vlmr scaling configs/pipeline/scaling.yaml --plot-only

For each model in the config it runs one `vlmr pipeline` chain (named <name>_<arch>):
the same shapes pretraining recipe, the same domain data rendered at the model's
frame_size (its input size unless set), zero-shot and LoRA-adapted reward models,
calibration, evaluation, and `vlmr compare` when the base pipeline has a compare
stage. Each chain skips its finished stages, so an interrupted study resumes where
it stopped. Then it plots held-out AUROC (own-goal; pooled where frames have no
mission) and precision at the calibrated threshold against the parameter count,
for each arm, and, when agents were trained, their final success against the
parameter count and against reward quality (test AUROC, rollout reward
precision; scaling_report.py). Agent intervals are recomputed from the chains'
per-seed values, so --plot-only reports finished runs with the current method.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

from vlmr.rl.experiments.scaling_report import agents_of, write_outputs
from vlmr.rl.experiments.scaling_rows import chain_seconds, guarantee_record, kept_rows, training_records

from vlmr.core.config import PositiveInt, config_dataclass, config_label, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import check_writable, read_json


@config_dataclass
class ScalingModel:
    arch: str  # open_clip architecture (configs/models/*.json or a stock one)
    image_size: PositiveInt  # the architecture's input size
    frame_size: PositiveInt | None = None  # size the domain frames are rendered at (pipeline frame_size); null = image_size


@config_dataclass
class ScalingConfig:
    CONFIG_REFS: ClassVar[tuple[str, ...]] = ("pipeline",)  # resolves next to the YAML file that names it
    name: str  # study name: chains are <name>_<arch>, the study's outputs go to {runs_dir}/{name}/
    pipeline: str  # the pipeline YAML whose chain runs once per model (configs/pipeline/...)
    models: list[ScalingModel]  # sizes to compare, smallest first
    set: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of that pipeline config, every model
    runs_dir: str = "runs"  # parent folder of the chains and the study
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')


def chain_config(cfg: ScalingConfig, model: ScalingModel):
    from vlmr.rl.experiments.pipeline import PipelineConfig
    from vlmr.rl.experiments.stage_runner import StageSection, stage_config

    wiring = {"name": f"{cfg.name}_{model.arch}", "arch": model.arch, "image_size": model.image_size,
              "frame_size": model.frame_size, "runs_dir": cfg.runs_dir, "strict": cfg.strict}
    return stage_config(PipelineConfig, StageSection(config=cfg.pipeline, set=cfg.set), wiring,
                        f"scaling model {model.arch}")


def parameter_count(checkpoint: Path) -> int:
    """Parameters of the whole CLIP (both towers), read from the safetensors header without loading weights."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def collect_row(run_dir: Path, model: ScalingModel) -> dict:
    """One model's numbers from its chain's outputs."""
    from vlmr.calibrate.evaluate import read_results
    from vlmr.rl.experiments.pipeline_stages import headline

    evaluated = read_results(run_dir / "evaluate" / "results.json")
    evaluated_names = {m["name"] for m in evaluated["models"]}
    arms, views = {}, set()
    for m in evaluated["models"]:
        view, head = headline(m["metrics"]["macro"])  # own-goal on BabyAI, pooled where frames have no mission
        views.add(view)
        arms[m["name"]] = {"auroc": head.get("auroc"), "precision": head.get("precision"),
                           "recall": head.get("recall"),
                           "guarantee": guarantee_record(run_dir, m["name"], m["metrics"]["per_goal"])}
    comparisons, interval = {}, None
    compare = run_dir / "compare" / "results.json"
    if compare.is_file():
        results = read_json(compare, "compare results")
        agents, comparisons, interval = agents_of(results, str(compare))
        for name, record in agents.items():
            arms.setdefault(name, {}).update(record)
        for arm in results["arms"]:  # a model the evaluation did not score (refined): its calibration's test
            if arm["name"] not in evaluated_names and arm.get("calibration"):  # metrics on the same domain split
                arms[arm["name"]].update(domain_test_quality(Path(arm["calibration"]), evaluated["data"]["name"]))
    params = parameter_count(run_dir / "base" / "reward_model" / "open_clip_model.safetensors")
    return {"arch": model.arch, "image_size": model.image_size, "frame_size": model.frame_size or model.image_size,
            "params": params, "run_dir": str(run_dir), "view": "/".join(sorted(views)), "arms": arms,
            "comparisons": comparisons, "interval": interval, "training": training_records(run_dir),
            "chain_seconds": chain_seconds(run_dir)}


def domain_test_quality(calibration: Path, dataset: str) -> dict:
    """AUROC, precision and recall (own-goal, else pooled) of a calibration's test metrics on the named dataset:
    a model calibrated on several datasets (refine's extra_data) reports each one's own."""
    from vlmr.rl.experiments.pipeline_stages import headline

    cal = read_json(calibration, "calibration")
    sets = cal["metrics"].get("datasets") or [{"name": cal["fit"]["data"].get("name"), "macro": cal["metrics"]["macro"]}]
    macro = next((d["macro"] for d in sets if d.get("name") == dataset), None)
    if macro is None:
        return {}
    _, head = headline(macro)
    return {k: head.get(k) for k in ("auroc", "precision", "recall")}


def scaling(cfg: ScalingConfig, plot_only: bool = False, only: list[str] | None = None) -> Path:
    from vlmr.rl.experiments.pipeline import pipeline

    if not cfg.models:
        raise VlmrError("scaling: `models` is empty; list at least one {arch, image_size}")
    archs = [m.arch for m in cfg.models]
    if len(set(archs)) < len(archs):  # chains are named by arch: two entries would share one run folder
        raise VlmrError(f"scaling: `models` lists an architecture twice ({archs}); give each size once")
    unknown = sorted(set(only or ()) - set(archs))
    if unknown:
        raise VlmrError(f"scaling --only {unknown}: not among the study's models {archs}")
    chains = [chain_config(cfg, model) for model in cfg.models]  # every chain's config is read before any runs
    check_writable(Path(cfg.runs_dir) / cfg.name, "scaling output folder")
    rows, kept = [], kept_rows(Path(cfg.runs_dir) / cfg.name, archs)
    for model, chain in zip(cfg.models, chains):
        if not plot_only and (not only or model.arch in only):  # --only: run the study in pieces, a size at a time
            print(f"== scaling: {model.arch} ({chain.name})", flush=True)
            pipeline(chain)
        try:
            rows.append(collect_row(Path(cfg.runs_dir) / chain.name, model))
        except VlmrError as e:
            if model.arch in kept and not (run_dir := Path(cfg.runs_dir) / chain.name).is_dir():
                # finished elsewhere (another machine or session): its row travels in results.json
                print(f"scaling: {model.arch} from the previous results.json ({run_dir} is not here)")
                rows.append({**kept[model.arch], "kept_from_previous_results": True})
                continue
            if not (only or plot_only):
                raise
            print(f"scaling: {model.arch} left out of the report: its chain is not finished ({e})")
    if not rows:
        raise VlmrError(f"scaling {cfg.name}: no size's chain is finished yet; run `vlmr scaling CONFIG --only ARCH`")
    config = dataclasses.asdict(cfg) | {"pipeline": config_label(cfg.pipeline)}  # results.json travels (README)
    path = write_outputs(cfg.name, config["pipeline"], rows, Path(cfg.runs_dir) / cfg.name, config)
    print(f"scaling {cfg.name}: {len(rows)} models; report: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--plot-only", action="store_true", help="only gather finished chains' results and plot")
        parser.add_argument("--only", action="append", metavar="ARCH",
                            help="run only this size's chain (repeatable); the report covers the finished chains")

    return stage_main(argv, ScalingConfig, scaling, "vlmr scaling", __doc__.split("\n\n")[0], extra, kind="pipeline")
