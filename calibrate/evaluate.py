"""`vlmr evaluate`: score one or more reward models on labelled shards and compare them side by side.

    vlmr evaluate --model runs/demo/zero_shot --calibration runs/demo/zero_shot/calibration.json --name zero-shot \\
                  --model runs/demo/adapted --calibration runs/demo/adapted/calibration.json --name adapted \\
                  --data data/babyai_goto --split test --out runs/demo/evaluate.json

Each `--calibration` and `--name` belongs to the `--model` before it; a model
without `--calibration` uses its own defaults (reward_model.json's temperature
and threshold). Prints one table of macro precision, recall, F1, AUROC and ECE,
own-goal (each frame for its own mission, the headline) and pooled (every
(frame, goal) pair), and writes every figure, per goal too, as JSON: the offline
half of the A/B comparison. Similarity matrices are cached in
<model>/calibration/ like `vlmr calibrate` does (--no-cache to skip).

From Python, the same run with the typed config:

    evaluate(EvaluateConfig(models=[{"dir": "runs/demo/adapted", "calibration": "auto"}], data="data/babyai_goto"))
    read_results("runs/demo/evaluate.json")   # refuses results written by an older vlmr

`--render-size N` scores the split's episodes drawn again at N px (same env seeds and behaviour
policy, collected once into <data>/render-<N>/) and resized to each model's input, which shows
what frames drawn at another size cost; vlmr.rl.collect.rerender does the drawing, so from
Python use `vlmr.run_evaluate` for it. The results record the render size.

`--paraphrase "stand right in front of the {color} {type}"` (repeatable; config key `paraphrases`) rewords
every goal that parses into a colour and a type and scores the frames with the reworded sentences as the
goal captions; each model's results gain AUROC (own-goal and pooled) per wording beside the original
(vlmr.calibrate.paraphrases). The parsing is BabyAI's, so from Python use `vlmr.run_evaluate` for it too.

Tests: `.venv/bin/python -m pytest tests/test_evaluate.py -q`
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Literal

from vlmr.calibrate.fit import cli_warnings, resolve_device
from vlmr.calibrate.metrics import evaluate_scores, goal_groups, group_macros
from vlmr.calibrate.paraphrases import (
    GoalSlots,
    add_wordings,
    check_paraphrase,
    reword,
    wording_results,
    wording_table,
)
from vlmr.calibrate.report import comparison_table
from vlmr.calibrate.scores import score_split

from vlmr.core.config import build_config, config_dataclass, config_to_dict
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, check_writable, read_json
from vlmr.core.metrics import METRICS
from vlmr.core.quality import STRICT_HELP

# 2: undefined metrics are null with a note (version 1 wrote precision 0.0 where nothing was predicted)
RESULTS_VERSION = 2


@config_dataclass
class EvaluatedModel:
    dir: str  # reward-model directory (RewardModel.save / vlmr finetune output)
    calibration: str | None = None  # its calibration.json; "auto" = <dir>/calibration.json; none = model defaults
    name: str | None = None  # column name in the table and the JSON; none = the directory's name

    @property
    def column(self) -> str:
        return self.name or Path(self.dir).name


@config_dataclass
class EvaluateConfig:
    models: list[EvaluatedModel]  # the reward models to compare, one column each, in this order
    data: str  # labelled dataset directory: manifest.json + shards (vlmr collect)
    split: str = "test"  # split every model is evaluated on
    out: str | None = None  # write every figure as JSON here; none = print the table only
    batch_size: int = 256  # frames per reward-model forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    limit: int | None = None  # score at most this many frames (smoke runs); none = all
    render_size: int | None = None  # score the split's episodes drawn again at this many px (cached in
    # <data>/render-<N>/) and resized to each model's input; none = the stored frames
    ece_bins: int = 15  # bins of the expected calibration error
    paraphrases: list[str] = dataclasses.field(default_factory=list)  # mission rewordings with {color} and {type}
    # ("stand right in front of the {color} {type}"): AUROC per wording beside the original; [] = none
    cache_scores: bool = True  # read and write similarity matrices in <model>/calibration/ (shared with calibrate)
    logger: Literal["wandb", "csv", "none"] = "none"  # also log results: W&B (offline unless WANDB_MODE is set), CSV
    wandb_project: str = "vlmr"  # W&B project, with logger=wandb
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')

    def __post_init__(self):
        if not self.models:
            raise ValueError("models is empty: give at least one reward model (--model DIR)")
        names = [m.column for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two models would share the column name(s) {dupes}; give each a distinct --name")
        for key in ("batch_size", "ece_bins", "limit", "render_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} (--{key.replace('_', '-')}) must be >= 1, got {value}")
        for template in self.paraphrases:
            check_paraphrase(template)  # a VlmrError: one line naming the template, not pydantic's block


def read_results(path: str | Path) -> dict:
    """An evaluate results file, refused when an older vlmr wrote it (its metrics meant something else)."""
    data = read_json(path, "evaluation results")
    found = data.get("version") if isinstance(data, dict) else None
    if found != RESULTS_VERSION:
        raise VlmrError(f"evaluation results {path} have version {found!r}; this vlmr reads version "
                        f"{RESULTS_VERSION}. Regenerate them with `vlmr evaluate`.")
    return data


class _ModelAction(argparse.Action):
    """--model starts a new entry; --calibration / --name fill in the latest one."""

    def __call__(self, parser, namespace, value, option_string=None):
        models = getattr(namespace, "models", None) or []
        if option_string == "--model":
            models.append({"dir": value, "calibration": None, "name": None})
        elif not models:
            parser.error(f"{option_string} must follow the --model it belongs to")
        else:
            key = option_string.lstrip("-")
            if models[-1][key] is not None:
                parser.error(f"{option_string} given twice for --model {models[-1]['dir']}")
            models[-1][key] = value
        namespace.models = models


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vlmr evaluate`; a flag left out takes EvaluateConfig's default (one place for defaults)."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="vlmr evaluate", description=doc[0].split(": ", 1)[1],
                                epilog="example:\n" + doc[1] + "\n\n" + doc[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--model", action=_ModelAction, dest="models", required=True, metavar="DIR",
                   help="reward-model directory (repeatable: one per model to compare)")
    p.add_argument("--calibration", action=_ModelAction, dest="models", metavar="FILE",
                   help="calibration.json for the preceding --model ('auto' = <model>/calibration.json)")
    p.add_argument("--name", action=_ModelAction, dest="models", metavar="NAME", help="column name for the preceding --model")
    p.add_argument("--data", required=True, help="labelled dataset directory (manifest.json + shards)")
    p.add_argument("--split", help="split to evaluate on (default test)")
    p.add_argument("--out", help="write every figure as JSON here")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--limit", type=int, help="score at most this many frames")
    p.add_argument("--render-size", type=int, metavar="N",
                   help="score the split's episodes drawn again at N px, resized to each model's input")
    p.add_argument("--ece-bins", type=int)
    p.add_argument("--paraphrase", action="append", dest="paraphrases", metavar="TEMPLATE",
                   help="reword the goals with this template ({color} and {type}) and report AUROC per wording "
                        "(repeatable)")
    p.add_argument("--no-cache", dest="cache_scores", action="store_false",
                   help="do not read or write cached similarity matrices")
    p.add_argument("--logger", choices=("none", "csv", "wandb"),
                   help="also log results (W&B offline unless WANDB_MODE is set)")
    p.add_argument("--wandb-project")
    p.add_argument("--strict", action="store_true", default=False, help=STRICT_HELP)
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    return p


def evaluate(cfg: EvaluateConfig, progress: bool = True, rendered: str | Path | None = None,
             goal_slots: GoalSlots | None = None) -> dict:
    """Evaluate each of cfg.models on cfg.split; returns (and writes to cfg.out) the results dict.

    rendered: with cfg.render_size, the dataset holding the split drawn at that size (vlmr.rl.collect.rerender).
    goal_slots: with cfg.paraphrases, a goal sentence's {"color", "type"} or None (vlmr.rl.envs.babyai_goals).
    """
    from vlmr.finetune.reward_model import RewardModel

    from vlmr.core.dataset import MANIFEST_FILE, read_manifest
    from vlmr.core.files import sha256_file

    t0 = time.time()
    if cfg.out or cfg.logger != "none":  # before the scoring, not after it
        check_writable(Path(cfg.out).parent if cfg.out else Path("."), "evaluate output folder")
    device = resolve_device(cfg.device)
    manifest = read_manifest(cfg.data)
    if cfg.render_size is not None and rendered is None:
        raise VlmrError("render_size needs the split drawn again by its environment: call vlmr.run_evaluate "
                        "(vlmr.rl.collect.rerender.evaluate) or `vlmr evaluate --render-size N`")
    if cfg.paraphrases and goal_slots is None:
        raise VlmrError("paraphrases need the environment's goal parser to find {color} and {type}: call "
                        "vlmr.run_evaluate (vlmr.rl.collect.rerender.evaluate) or `vlmr evaluate --paraphrase T`")
    frames_dir = Path(rendered) if cfg.render_size is not None else Path(cfg.data)
    results = []
    for spec in cfg.models:
        cal = spec.calibration
        if cal == "auto":
            cal = str(Path(spec.dir) / "calibration.json")
            if not Path(cal).is_file():
                raise VlmrError(f"--calibration auto: {cal} does not exist; run `vlmr calibrate` for {spec.dir}")
        rm = RewardModel.load(spec.dir, calibration=cal, device=device)
        # goals held out of fine-tuning are scored as any new goal at load: the fit for new goals, calibrated: false
        held = rm.add_goals(manifest.get("holdout_goals") or [], cfg.strict)  # known goals are skipped
        wordings = {t: reword(rm.spec.goals, rm.spec.negatives, t, goal_slots, spec.dir) for t in cfg.paraphrases}
        if wordings:
            add_wordings(rm, wordings)  # scored in the same pass; the saved goals' columns come first, unchanged
        cache_dir = Path(spec.dir) / "calibration" if cfg.cache_scores else None
        scores = score_split(rm, frames_dir, cfg.split, cfg.batch_size, cache_dir, cfg.limit, progress,
                             f"reward model {spec.dir}", cfg.strict)
        if int(scores.labels.sum()) == 0:
            raise VlmrError(f"split {cfg.split!r} of {cfg.data} has no positive label for any goal; precision, recall "
                            "and AUROC are undefined there. Evaluate on a split where goals are reached.")
        num_saved = len(rm.spec.goals) + len(rm.spec.negatives)
        goals = list(rm.spec.goals) + held  # the held-out goals' columns follow the saved candidates
        temps, thresholds = rm.temperatures.cpu()[:len(goals)], rm.thresholds.cpu()[:len(goals)]
        metrics = evaluate_scores(scores.sims[:, :num_saved + len(held)], scores.labels, scores.own_goal, temps,
                                  thresholds, goals, cfg.ece_bins, num_saved)
        metrics["groups"] = group_macros(metrics["per_goal"], goal_groups(goals, manifest.get("holdout_goals")))
        results.append({"name": spec.column, "dir": str(spec.dir), "model_id": rm.model_id, "arch": rm.spec.arch,
                        "calibration": cal, "skipped": int(scores.meta.get("skipped", 0)), "new_goals": held,
                        "temperatures": temps.tolist(), "thresholds": thresholds.tolist(), "metrics": metrics})
        if wordings:
            known = len(rm.spec.goals)
            results[-1]["wordings"] = wording_results(rm, scores, wordings, metrics, temps[:known],
                                                      thresholds[:known], cfg.ece_bins)
    out_dict = {"version": RESULTS_VERSION, "split": cfg.split,
                "data": {"dir": str(cfg.data), "name": manifest.get("name"),
                         "manifest_sha256": sha256_file(Path(cfg.data) / MANIFEST_FILE), "limit": cfg.limit,
                         "frames": results[0]["metrics"]["frames"], "skipped": max(r["skipped"] for r in results)},
                "render_size": cfg.render_size, "paraphrases": list(cfg.paraphrases), "models": results}
    skipped = out_dict["data"]["skipped"]
    drawn = ""
    if cfg.render_size is not None:
        out_dict["data"]["rendered"] = {"dir": str(frames_dir),
                                        "manifest_sha256": sha256_file(frames_dir / MANIFEST_FILE)}
        drawn = f"; its episodes drawn again at {cfg.render_size} px ({frames_dir}), resized to each model's input"
    print(f"vlmr evaluate: {cfg.split} split of {cfg.data} ({results[0]['metrics']['frames']} frames"
          f"{f'; {skipped} damaged samples skipped, see the warnings' if skipped else ''}{drawn})")
    print(comparison_table(results))
    for note in results[0]["metrics"]["notes"]:
        print(f"note: {note}")
    if cfg.paraphrases:
        print(wording_table(results))
    if cfg.out:
        atomic_write_json(cfg.out, out_dict)
        print(f"wrote {cfg.out}")
    _log(cfg, out_dict, time.time() - t0)
    return out_dict


def _log(cfg: EvaluateConfig, results: dict, seconds: float) -> None:
    from vlmr.core.provenance import run_info
    from vlmr.core.tracking import flatten, log_results

    if cfg.logger == "none":
        return
    scalars = {}
    for m in results["models"]:
        for view in ("pooled", "own_goal"):
            macro = (m["metrics"]["macro"].get(view) or {})
            scalars.update(flatten(f"reward/{m['name']}/macro_{view}", {k: macro.get(k) for k in METRICS}))
    cols = ["model", "view", *METRICS]
    rows = [[m["name"], view, *((m["metrics"]["macro"].get(view) or {}).get(k) for k in METRICS)]
            for m in results["models"] for view in ("own_goal", "pooled")]
    out_dir = Path(cfg.out).parent if cfg.out else Path(".")
    info = run_info(config_to_dict(cfg)) | {"stage": "evaluate", "data": results["data"],
                                            "seconds": round(seconds, 2)}
    log_results(cfg.logger, out_dir, scalars, info, cfg.wandb_project, "evaluate", (cols, rows), job_type="evaluate")


def main(argv: list[str] | None = None, run=None) -> int:
    """The CLI; run(cfg, progress) does the work (default: evaluate; `vlmr evaluate` passes rerender's)."""
    with cli_warnings():
        args = vars(build_parser().parse_args(argv))
        quiet = args.pop("quiet")
        (run or evaluate)(build_config(EvaluateConfig, args, "vlmr evaluate's arguments"), progress=not quiet)
    return 0
