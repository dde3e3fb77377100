"""`vlmr pipeline CONFIG`: the whole chain, skipping every stage whose outputs are complete and current.

    vlmr pipeline configs/pipeline/babyai_demo.yaml                 # what `make demo` runs
    vlmr pipeline configs/pipeline/babyai_demo.yaml --force calibrate_adapted
    vlmr pipeline configs/pipeline/babyai_demo.yaml --stop-after base  # data and base model only
    vlmr pipeline configs/pipeline/crafter.yaml

Stages: collect the shapes corpus and the domain data; pretrain the base CLIP on
shapes (full training); export the zero-shot reward model (base weights, domain
goal set, no training); LoRA-adapt the base on the domain; LoRA-adapt a randomly
initialised model (the control arm); calibrate each reward model; `vlmr evaluate`
them side by side; `vlmr compare` them with PPO; with a `refine` section, refine
the adapted model on its agents' rollouts and add agents on the refined reward
(`compare_refined`); write runs/<name>/report.md.

A stage is skipped when runs/<name>/pipeline/<stage>.json records the same
fingerprint (its config plus the identities of its inputs) and its outputs are
still valid. A stage whose config or inputs changed is rerun, and so is
everything downstream of it, because the fingerprints chain.

This file: the config and the order of the stages. stage_runner.py: skipping
and fingerprints; pipeline_stages.py: the stages; pipeline_report.py: report.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

from vlmr.rl.experiments.pipeline_refine import refine_stages, refined_arm, run_refine
from vlmr.rl.experiments.pipeline_report import write_final_report
from vlmr.rl.experiments.pipeline_stages import (
    calibrate_models,
    check_base_pretrained,
    collect_data,
    evaluate_models,
    run_compare,
    train_models,
)
from vlmr.rl.experiments.stage_runner import StageRunner, StageSection, StopPipeline

from vlmr.core.config import PositiveInt, config_dataclass, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import check_writable, sha256_file


@config_dataclass
class PipelineConfig:
    # keys naming other configs: relative paths in a YAML file resolve next to that file
    CONFIG_REFS: ClassVar[tuple[str, ...]] = tuple(f"{s}.config" for s in
                                                   ("shapes", "domain", "base", "adapt", "calibrate", "compare",
                                                                      "refine"))
    name: str  # run name: outputs go to {runs_dir}/{name}/
    shapes: StageSection  # collection of the generic shapes corpus (configs/data/shapes.yaml)
    domain: StageSection  # collection of the in-domain data (configs/data/babyai_goto.yaml)
    base: StageSection  # full pretraining of the base CLIP on shapes (configs/finetune/base_shapes_full.yaml)
    adapt: StageSection  # LoRA adaptation on the domain (configs/finetune/babyai_lora.yaml)
    calibrate: StageSection  # calibration of every reward model (configs/calibrate/babyai_goto.yaml)
    compare: StageSection | None = None  # PPO A/B comparison (configs/rl/compare_babyai.yaml); null = skip
    refine: StageSection | None = None  # on-policy refinement of the adapted model on its agents' rollouts, then
    # agents on the refined reward (configs/refine/babyai_refine.yaml; rl/experiments/pipeline_refine.py); null = skip
    refine_rounds: PositiveInt = 1  # on-policy rounds: round k >= 2 refines round k-1's model on the frames of the
    # agents trained on its reward, then trains agents on the result (stages refine_k, compare_refined_k)
    runs_dir: str = "runs"  # parent folder of the run
    data_dir: str = "data"  # parent folder of the datasets
    arch: str = "vlmr-small"  # architecture of every model in the chain
    image_size: PositiveInt = 112  # the architecture's input size; the shapes corpus is rendered at it
    frame_size: PositiveInt | None = None  # size the domain frames (data and PPO's reward view) are rendered at, resized to
    # image_size by the reward model; null = image_size. 96 for a 112 px, 16 px patch model puts grid-world cells
    # off the patch grid (at 112 px each BabyAI cell is exactly one patch; see README, scaling study)
    workers: int = 1  # collection processes
    control: bool = True  # also adapt a randomly initialised model, to separate pretraining from adaptation
    goal_templates: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # prompts per goal family,
    # with {color} and {type} ("a {color} {type} right in front of you"); every reward model uses them
    base_pretrained: str | None = None  # a base CLIP to start from instead of pretraining one on shapes: an
    # open_clip tag of `arch` ("openai", "laion2b_s34b_b79k") or a checkpoint file (e.g. another chain's
    # base); skips the shapes stages
    paraphrases: list[str] = dataclasses.field(default_factory=list)  # mission rewordings the evaluation also
    # scores, with {color} and {type} ("stand right in front of the {color} {type}"); AUROC per wording in the report
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict
    # mode'); passed to every stage


    def __post_init__(self):
        from vlmr.calibrate.paraphrases import check_paraphrase

        if self.refine is not None and self.compare is None:
            raise ValueError("refine replays the compare's agents: give a compare section, or set refine: null")

        for template in self.paraphrases:  # before any stage runs, not at the evaluation an hour later
            check_paraphrase(template)


STAGES = ("collect_shapes", "collect_domain", "base", "zero_shot", "adapted", "control", "calibrate_zero_shot",
          "calibrate_adapted", "calibrate_control", "evaluate", "compare", "refine", "compare_refined")


def stage_names(refine_rounds: int = 1) -> tuple[str, ...]:
    """Every stage a chain can have, with the stages of on-policy rounds 2..refine_rounds after the first's."""
    return STAGES + tuple(name for k in range(2, refine_rounds + 1) for name in refine_stages(k))


def check_stage_names(force: set[str], stop_after: str | None, refine_rounds: int = 1) -> None:
    """Stage names given by the user (--force, --stop-after) must be stages: a typo would silently force nothing."""
    names = stage_names(refine_rounds)
    unknown = sorted(set(force) - set(names)) + ([stop_after] if stop_after and stop_after not in names else [])
    if unknown:
        raise VlmrError(f"unknown stage {', '.join(map(repr, unknown))}; the stages are {', '.join(names)}")


def pipeline(cfg: PipelineConfig, force: set[str] = frozenset(), stop_after: str | None = None) -> Path | None:
    """Run the chain; returns the final report, or None when stopped early by `stop_after`."""
    check_stage_names(force, stop_after, cfg.refine_rounds)
    try:
        return _pipeline(cfg, force, stop_after)
    except StopPipeline as stop:
        print(f"pipeline {cfg.name}: stopped after stage {stop}, as asked")
        return None


def _pipeline(cfg: PipelineConfig, force: set[str], stop_after: str | None) -> Path:
    run_dir = Path(cfg.runs_dir) / cfg.name
    base_weights = check_base_pretrained(cfg) if cfg.base_pretrained else None  # fail before any work
    check_writable(run_dir, "pipeline run folder")  # both output folders, before the first stage
    check_writable(cfg.data_dir, "pipeline data folder")
    runner = StageRunner(run_dir, set(force), stop_after)
    t_start = time.perf_counter()

    data = collect_data(cfg, runner, shapes=base_weights is None)  # no shapes corpus for a ready-made base
    manifest_sha = {k: sha256_file(v / "manifest.json") for k, v in data.items()}
    models = train_models(cfg, runner, data, manifest_sha, base_weights)
    cal_reports = calibrate_models(cfg, runner, models, data["domain"], manifest_sha["domain"])
    eval_json = evaluate_models(runner, run_dir, models, data["domain"], manifest_sha["domain"], cfg.strict,
                                cfg.paraphrases)
    compare_report = run_compare(cfg, runner, run_dir, models, data["domain"]) if cfg.compare is not None else None
    refined: dict[str, Path] = {}
    rounds = cfg.refine_rounds if cfg.refine is not None else 0
    for k in range(1, rounds + 1):  # round k replays the agents of round k-1's arm (round 1: the adapted arm's);
        # refine_config says so when there are none
        refined[refined_arm(k)] = run_refine(cfg, runner, run_dir, {**models, **refined}, data["domain"], k)
        compare_report = run_compare(cfg, runner, run_dir, models, data["domain"], refined)

    report = write_final_report(cfg, run_dir, runner.rows, cal_reports, eval_json, compare_report,
                                time.perf_counter() - t_start)
    print(f"pipeline {cfg.name}: {len(runner.rows)} stages in {time.perf_counter() - t_start:.0f} s; report: {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--force", nargs="*", default=[], metavar="STAGE",
                            help=f"stages to rerun even if up to date, of: {', '.join(STAGES)}")
        parser.add_argument("--stop-after", metavar="STAGE", help="stop once this stage is done (a name as in "
                            "--force; refine_k and compare_refined_k with refine_rounds >= k)")

    return stage_main(argv, PipelineConfig, lambda cfg, force, stop_after: pipeline(cfg, set(force), stop_after),
                      "vlmr pipeline", __doc__.split("\n\n")[0], extra, kind="pipeline")
