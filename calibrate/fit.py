"""`vlmr calibrate CONFIG [key=value ...]`: fit per-goal temperature and threshold, and report reward quality.

    vlmr calibrate configs/calibrate/shapes.yaml
    vlmr calibrate configs/calibrate/shapes.yaml reward_model=runs/demo/reward_model data=data/shapes criterion=max_f1
    vlmr calibrate configs/calibrate/babyai.yaml reward_model=runs/refined/reward_model 'extra_data=[data/rollouts]'
    python -c "from vlmr.calibrate.fit import CalibrateConfig, calibrate; calibrate(CalibrateConfig(reward_model=..., data=...))"

Steps: score `fit_split` (cached similarity matrix) -> fit tau_g (max likelihood) and
beta_g (criterion) -> score `eval_split` -> metrics before/after -> write

With `extra_data` (more datasets with the same goal set, e.g. agents' rollouts), the fit_split frames of
every dataset are fitted together and the eval_split frames of every dataset are evaluated: the
headline metrics are over all of them (pooled), `metrics.datasets` has each dataset's own, and
`fit.datasets` each dataset's frame and skip counts (docs/DESIGN.md, "Calibration file").

    <out>  (default <reward_model>/calibration.json; byte-identical for identical inputs)
    <out without .json>/  report.md, pr_curves-*.png, reliability.png, histograms-*.png,
                          run.json (provenance), scores-*.npz (cache), metrics.csv (logger=csv)

Tests: `.venv/bin/python -m pytest tests/test_calibrate_stage.py -q`
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from vlmr.calibrate.fitting import CalibrationWarning, ThresholdCriterion, fit_calibration
from vlmr.calibrate.metrics import BEFORE_KEYS, add_before, evaluate_scores
from vlmr.calibrate.new_goal_fit import fit_new_goals
from vlmr.calibrate.plots import write_plots
from vlmr.calibrate.report import calibration_report
from vlmr.calibrate.scores import concat_scores, saved_goal_scores, score_split

from vlmr.core.calibration_file import write_calibration
from vlmr.core.config import PositiveInt, config_dataclass, config_to_dict, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, atomic_write_text, check_writable
from vlmr.core.metrics import METRICS, pooled_count_metrics
from vlmr.core.quality import QualityWarning, quality_issue
from vlmr.core.reporting import fmt

VIEW_KEYS = METRICS + BEFORE_KEYS  # the numbers of a view that go to the logger
# what calibration.json's thresholds mean; pipeline and refine records hold it, so a change reruns calibrations
# (2: a guaranteed threshold is the highest accepted one with the most recall, not the lowest accepted one)
METHOD_VERSION = 2


@config_dataclass
class CalibrateConfig:
    reward_model: str  # reward-model directory to calibrate (RewardModel.save / vlmr finetune output)
    data: str  # labelled dataset directory: manifest.json + shards (vlmr collect)
    extra_data: list[str] = dataclasses.field(default_factory=list)  # more labelled datasets with the same goal set
    # (e.g. agents' rollouts): their fit_split frames join the fit, their eval_split frames are evaluated too
    fit_split: str = "val"  # split the temperatures and thresholds are fitted on
    eval_split: str = "test"  # held-out split every reported metric is computed on; must differ from fit_split
    criterion: Literal["precision_at", "max_f1", "fbeta"] = "precision_at"  # how each goal's threshold is chosen
    target_precision: float = 0.95  # precision_at: precision the threshold must reach on fit_split, in (0, 1]
    confidence: float | None = 0.9  # precision_at: the target holds with this probability (exact Clopper-Pearson
    # bound, fixed-sequence scan; docs/DESIGN.md); null = today's point estimate on fit_split
    threshold_frames: Literal["all", "own_goal"] = "all"  # the fit_split frames each goal's threshold is chosen on:
    # every frame scored for the goal, or only its own episodes' frames, where its RL reward is paid (docs/DESIGN.md)
    f_beta: float = 1.0  # fbeta criterion: F-beta's beta, > 1 favours recall (not the reward threshold beta_g)
    min_positives: int = 10  # goals with fewer positives in fit_split get the shared fallback values
    new_goal_fit: bool = True  # when the data has goals held out of fine-tuning, fit on their fit_split frames
    # the temperature and threshold goals outside the goal set get (fit.new_goal, cross-fitted by halves;
    # calibrate/new_goal_fit.py); false: new goals get the saved goals' pooled fit
    temperature_min: float = 0.001  # lower bound of the temperature search
    temperature_max: float = 10.0  # upper bound of the temperature search
    ece_bins: int = 15  # bins of the expected calibration error and the reliability diagrams
    batch_size: PositiveInt = 256  # frames per reward-model forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    limit: int | None = None  # score at most this many frames per split (smoke runs); none = all
    cache_scores: bool = True  # keep similarity matrices next to the outputs so refits skip the model
    plots: bool = True  # write PR curves, reliability diagrams and score histograms
    out: str | None = None  # calibration file; none = <reward_model>/calibration.json
    logger: Literal["wandb", "csv", "none"] = "wandb"  # also log results: W&B (offline unless WANDB_MODE is set), CSV, none
    wandb_project: str = "vlmr"  # W&B project, with logger=wandb
    run_name: str | None = None  # W&B run name; none = calibrate-<model id[:8]>
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')

    def __post_init__(self):
        if self.fit_split == self.eval_split:
            raise ValueError(f"fit_split and eval_split are both {self.fit_split!r}; metrics must come from a split "
                             "that was not fitted (e.g. fit_split=val eval_split=test)")
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError(f"target_precision must be in (0, 1], got {self.target_precision}")
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1) (e.g. 0.9), or null for the point estimate; "
                             f"got {self.confidence}")
        if self.f_beta <= 0:
            raise ValueError(f"f_beta must be > 0, got {self.f_beta}")
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be >= 1, got {self.min_positives}")
        if not 0.0 < self.temperature_min < self.temperature_max:
            raise ValueError(f"need 0 < temperature_min < temperature_max, got {self.temperature_min}, "
                             f"{self.temperature_max}")
        if self.ece_bins < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("ece_bins and limit must be >= 1")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VlmrError(f"device={device!r} but no CUDA device is available here; use device=cpu or auto")
    return device


def output_paths(cfg: CalibrateConfig) -> tuple[Path, Path]:
    """(calibration.json, folder for plots/report/cache): calibration.json -> calibration/."""
    out = Path(cfg.out) if cfg.out else Path(cfg.reward_model) / "calibration.json"
    if out.suffix != ".json":
        raise VlmrError(f"out={cfg.out!r}: the calibration file name must end in .json")
    return out, out.with_suffix("")


def _criterion_entry(crit: ThresholdCriterion) -> dict:
    entry = {"name": crit.name, "description": crit.describe()}
    if crit.name == "precision_at":
        entry["target_precision"] = crit.target_precision
        entry["confidence"] = crit.confidence
    if crit.name == "fbeta":
        entry["beta"] = crit.beta
    return entry


GUARANTEE_KEYS = ("guaranteed", "precision_bound", "best_bound", "more_predicted_needed", "scan_stopped_at",
                  "pooled_guaranteed")


def guarantee_summary(goals: dict[str, dict]) -> dict | None:
    """How many goals hold a guaranteed threshold, and the test precision pooled over just those goals."""
    if all(e.get("guaranteed") is None for e in goals.values()):
        return None  # a point-estimate criterion: nothing was claimed
    ok = [g for g, e in goals.items() if e.get("guaranteed")]
    out = {"guaranteed_goals": ok, "guaranteed": len(ok), "goals": len(goals), "share": round(len(ok) / len(goals), 6)}
    for key, view in (("test_all_frames", "test"), ("test_own_goal", "test_own")):
        counts = [goals[g][view] for g in ok if goals[g].get(view) and "tp" in goals[g][view]]
        pooled = pooled_count_metrics(counts) if counts else None
        out[key] = pooled and {k: _round(v) for k, v in pooled.items()}
    return out


def _round(v):
    return round(v, 6) if isinstance(v, float) else v


def _view(m: dict | None) -> dict | None:
    return None if m is None else {k: v for k, v in m.items() if k != "notes"} | {"notes": m.get("notes", [])}


def dataset_entries(paths: list[str], manifests: list[dict], vals: list, tests: list, fit, rm, cfg) -> tuple[list, list]:
    """Per dataset: (fit entries: identity and frame/skip counts; test entries: counts and metrics). Paths are as
    given in the config, so the same inputs still give the same bytes."""
    fits, evals = [], []
    for path, manifest, val, test in zip(paths, manifests, vals, tests):
        ident = {"path": str(path), "name": manifest.get("name"), "source": manifest.get("source"),
                 "manifest_sha256": val.meta["manifest_sha256"]}
        fits.append(ident | {"frames": len(val.keys), "skipped": int(val.meta.get("skipped", 0))})
        m = evaluate_with_before(test, fit, rm, cfg.ece_bins)
        evals.append({"path": str(path), "name": manifest.get("name"), "frames": m["frames"],
                      "skipped": int(test.meta.get("skipped", 0)), "pooled": _view(m["pooled"]),
                      "own_goal": _view(m["own_goal"]), "macro": m["macro"], "notes": m["notes"]})
    return fits, evals


def evaluate_with_before(test, fit, rm, n_bins: int) -> dict:
    """Every metric view of `test` at the fitted values, with AUROC/AP/ECE at the model's defaults beside them."""
    after = evaluate_scores(test.sims, test.labels, test.own_goal, fit.temperatures, fit.thresholds, rm.goals, n_bins)
    before = evaluate_scores(test.sims, test.labels, test.own_goal, [rm.spec.temperature] * len(rm.goals),
                             [rm.spec.threshold] * len(rm.goals), rm.goals, n_bins)
    return add_before(after, before)


def build_calibration(rm, cfg, crit, fit, val, metrics, manifest, test, datasets=None) -> dict:
    """Everything calibration.json holds besides version and model_id. No absolute paths or times: same inputs,
    same bytes. datasets: dataset_entries' (fit, test) lists."""
    goals = {}
    for g, goal in enumerate(rm.goals):
        e = fit.goals[g]
        views = metrics["per_goal"][goal]
        goals[goal] = {
            "temperature": fit.temperatures[g], "threshold": fit.thresholds[g], "criterion": crit.name,
            "fallback": e["fallback"], "fallback_reason": e["fallback_reason"], "target_met": e["target_met"],
            **{k: _round(e[k]) for k in GUARANTEE_KEYS if k in e},
            "fit": {"positives": e["positives"], "negatives": e["negatives"], "nll": round(e["nll"], 6),
                    "temperature_at_bound": e["at_bound"], "best_precision": round(e["best_precision"], 6),
                    "precision": None if e["val_precision"] is None else round(e["val_precision"], 6),
                    "recall": None if e["val_recall"] is None else round(e["val_recall"], 6)},
            "test": _view(views["all"]),
            "test_own": _view(views["own"]),
        }
    shared = {k: v if k in ("temperature", "threshold") else _round(v) for k, v in fit.shared.items()}
    fit_sets, test_sets = datasets or (None, None)
    return {
        "goals": goals,
        "guarantee": guarantee_summary(goals),
        "criterion": _criterion_entry(crit),
        "fit": {"split": cfg.fit_split, "frames": int(val.labels.shape[0]), "skipped": int(val.meta.get("skipped", 0)),
                "threshold_frames": cfg.threshold_frames,
                "min_positives": cfg.min_positives,
                "temperature_bounds": [cfg.temperature_min, cfg.temperature_max], "shared": shared,
                "defaults": {"temperature": rm.spec.temperature, "threshold": rm.spec.threshold},
                "model": {"arch": rm.spec.arch, "candidates": int(val.sims.shape[1])},
                "data": {"name": manifest.get("name"), "manifest_sha256": val.meta["manifest_sha256"],
                         "limit": cfg.limit},
                **({"datasets": fit_sets} if fit_sets is not None else {})},
        "metrics": {"split": cfg.eval_split, "frames": metrics["frames"], "skipped": int(test.meta.get("skipped", 0)),
                    "pooled": _view(metrics["pooled"]),
                    "own_goal": _view(metrics["own_goal"]), "macro": metrics["macro"], "notes": metrics["notes"],
                    **({"datasets": test_sets} if test_sets is not None else {})},
        "warnings": fit.warnings + metrics.get("warnings", []),
    }


def check_datasets(paths: list[str], manifests: list[dict], rm, model_name: str) -> None:
    """Every dataset once, each with the reward model's goal set: before any frame is scored."""
    from vlmr.core.dataset import check_goal_sets

    seen: dict[Path, str] = {}
    for path, manifest in zip(paths, manifests):
        key = Path(path).resolve()
        if key in seen:
            raise VlmrError(f"extra_data: dataset {path} is already given (as {seen[key]}); its frames would count "
                            "twice in the fit, so list every dataset once")
        seen[key] = str(path)
        check_goal_sets(list(manifest["goals"]), list(rm.goals), path, model_name, manifest.get("holdout_goals"))


def calibrate(cfg: CalibrateConfig, progress: bool = True) -> dict:
    """Run the stage. Returns {"calibration", "report", "plots", "run", "metrics", "warnings"}."""
    from vlmr.finetune.reward_model import RewardModel

    from vlmr.core.dataset import read_manifest
    from vlmr.core.provenance import run_info

    t0 = time.time()
    out, art = output_paths(cfg)
    for folder in dict.fromkeys((out.parent, art)):  # before the scoring, not after it (`out=` writes elsewhere)
        check_writable(folder, "calibration output folder")
    device = resolve_device(cfg.device)
    rm = RewardModel.load(cfg.reward_model, device=device)
    paths = [cfg.data, *cfg.extra_data]
    manifests = [read_manifest(p) for p in paths]
    manifest = manifests[0]
    if len(rm.goals) + len(rm.spec.negatives) < 2:
        raise VlmrError(f"reward model {cfg.reward_model} has a single candidate caption, so P(g|o) = 1 for every "
                        "frame and nothing can be calibrated; add negatives or more goals")
    cache = art if cfg.cache_scores else None
    name = f"reward model {cfg.reward_model}"
    check_datasets(paths, manifests, rm, name)
    held = [g for g in manifest.get("holdout_goals") or [] if g not in rm.goal_to_index] if cfg.new_goal_fit else []
    # the held-out goals are scored as new goals at load, in the same pass; the saved goals' columns come first
    scorer = RewardModel.load(cfg.reward_model, device=device, goals=held) if held else rm
    num_saved = len(rm.spec.goals) + len(rm.spec.negatives)

    def score_all(split: str) -> tuple[list, list]:  # each dataset scored and cached on its own shards
        parts = [score_split(scorer, p, split, cfg.batch_size, cache, cfg.limit, progress, name, cfg.strict)
                 for p in paths]
        return parts, [saved_goal_scores(s, num_saved, len(rm.goals)) for s in parts]

    vals_with_held, vals = score_all(cfg.fit_split)
    val = concat_scores(vals)
    if int(val.labels.sum()) == 0:
        raise VlmrError(f"split {cfg.fit_split!r} of {', '.join(map(str, paths))} has no positive label for any goal: "
                        "there is nothing to fit a threshold to. Collect data in which goals are reached.")
    crit = ThresholdCriterion(cfg.criterion, cfg.target_precision, cfg.f_beta,
                              cfg.confidence if cfg.criterion == "precision_at" else None)
    own_goal = None
    if cfg.threshold_frames == "own_goal":
        own_goal = val.own_goal
        rows = np.flatnonzero(own_goal >= 0)
        where = f"split {cfg.fit_split!r} of {', '.join(map(str, paths))}"
        if len(rows) == 0:
            raise VlmrError(f"threshold_frames=own_goal, but no frame of {where} has a mission in the goal set (a "
                            "corpus without episodes, such as shapes): set threshold_frames=all")
        if int(val.labels[rows, own_goal[rows]].sum()) == 0:
            raise VlmrError(f"threshold_frames=own_goal, but no frame of {where} reaches its own mission: collect "
                            "episodes that reach their goals (min_positives_per_split), or set threshold_frames=all")
    fit = fit_calibration(val.sims, val.labels, crit, cfg.min_positives, cfg.temperature_min, cfg.temperature_max,
                          goal_names=rm.goals, strict=cfg.strict, own_goal=own_goal)
    new_goal, new_goal_note = None, None
    if held:
        with_held = concat_scores(vals_with_held)
        new_goal, new_goal_note = fit_new_goals(with_held.sims, with_held.labels, num_saved, len(rm.goals), held, crit,
                                                cfg.temperature_min, cfg.temperature_max, cfg.min_positives)
        print(f"vlmr calibrate: {new_goal_note}")
    tests = score_all(cfg.eval_split)[1]
    test = concat_scores(tests)
    metrics = evaluate_with_before(test, fit, rm, cfg.ece_bins)
    if int(test.labels.sum()) == 0:
        msg = f"split {cfg.eval_split!r} has no positive label for any goal: recall, F1, AP and AUROC are undefined"
        metrics["warnings"] = [msg]
        quality_issue(msg, cfg.strict, CalibrationWarning)

    datasets = dataset_entries(paths, manifests, vals, tests, fit, rm, cfg)
    body = build_calibration(rm, cfg, crit, fit, val, metrics, manifest, test, datasets)
    if new_goal_note:
        body["fit"]["new_goal"] = new_goal
        body["fit"]["new_goal_note"] = new_goal_note
    write_calibration(out, rm.model_id, body.pop("goals"), **body)
    with warnings.catch_warnings():  # the fit has just warned about its unguaranteed goals; say it once
        warnings.simplefilter("ignore", QualityWarning)
        rm.load_calibration(out)  # the file just written must load for this model: fail here, not in RL
    cal = {"model_id": rm.model_id, "goals": {g: rm.calibration["goals"][g] for g in rm.goals}, **body}

    for stale in (*art.glob("pr_curves-*.png"), *art.glob("histograms-*.png"), *art.glob("reliability.png")):
        stale.unlink()  # pages of an earlier run with more goals must not outlive it
    plots = write_plots(art, rm, fit, val, test, metrics, crit, cfg.ece_bins) if cfg.plots else []

    report = atomic_write_text(art / "report.md", calibration_report(cal, [p.name for p in plots]))
    info = run_info(config_to_dict(cfg)) | {
        "stage": "calibrate", "outputs": {"calibration": str(out), "report": str(report),
                                          "plots": [str(p) for p in plots]},
        "scores_cached": {"fit": val.cached, "eval": test.cached}, "device": device,
        "skipped_samples": {"fit": val.meta.get("skipped", 0), "eval": test.meta.get("skipped", 0)},
        "datasets": [{"path": str(p), "scores_cached": {"fit": v.cached, "eval": t.cached},
                      "skipped_samples": {"fit": v.meta.get("skipped", 0), "eval": t.meta.get("skipped", 0)}}
                     for p, v, t in zip(paths, vals, tests)],
        "seconds": round(time.time() - t0, 2), "model_dir": str(cfg.reward_model), "data_dir": str(cfg.data)}
    run_path = atomic_write_json(art / "run.json", info)
    _log(cfg, art, cal, info, plots, rm)
    own = metrics["macro"]["own_goal"] or {}
    pooled = metrics["macro"]["pooled"]
    headline = "own-goal" if own else "pooled"
    h = own or pooled
    print(f"vlmr calibrate: {len(rm.goals)} goals ({sum(e['fallback'] for e in fit.goals)} fallback), "
          f"{headline} macro on {cfg.eval_split}: precision {fmt(h.get('precision'))} recall {fmt(h.get('recall'))} "
          f"F1 {fmt(h.get('f1'))} AUROC {fmt(h.get('auroc'))} ECE {fmt(h.get('ece_before'))}->{fmt(h.get('ece'))}; "
          f"wrote {out} and {report}")
    return {"calibration": out, "report": report, "plots": plots, "run": run_path, "metrics": metrics,
            "warnings": cal["warnings"], "fit": fit}


def _log(cfg, art, cal, info, plots, rm) -> None:
    from vlmr.core.tracking import flatten, log_results

    if cfg.logger == "none":
        return
    m = cal["metrics"]
    scalars = {}
    for view in ("pooled", "own_goal"):
        scalars.update(flatten(f"reward/{view}", {k: v for k, v in (m[view] or {}).items() if k in VIEW_KEYS}))
        scalars.update(flatten(f"reward/macro_{view}", {k: v for k, v in ((m["macro"] or {}).get(view) or {}).items()
                                                        if k in VIEW_KEYS}))
    scalars["calibration/fallback_goals"] = sum(e["fallback"] for e in cal["goals"].values())
    cols = ["goal", "temperature", "threshold", "fallback", "target_met", "positives", "negatives",
            "precision", "recall", "f1", "auroc", "ap", "ece", "ece_before"]
    rows = [[g, e["temperature"], e["threshold"], e["fallback"], e["target_met"],
             *(e["test"].get(k) for k in cols[5:])] for g, e in cal["goals"].items()]
    log_results(cfg.logger, art, scalars, info, cfg.wandb_project, cfg.run_name or f"calibrate-{rm.model_id[:8]}",
                (cols, rows), plots, job_type="calibrate")


@contextlib.contextmanager
def cli_warnings():
    """On the command line, show warnings as one 'warning: ...' line each, without file and source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    with cli_warnings():
        return stage_main(argv, CalibrateConfig, calibrate, "vlmr calibrate",
                          "Fit per-goal temperature and threshold on a labelled split; report quality on another.",
                          kind="calibrate")

