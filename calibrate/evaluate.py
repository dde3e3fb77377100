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

Tests: `.venv/bin/python -m pytest tests/test_evaluate.py -q`
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vlmr.calibrate.fit import cli_warnings, resolve_device
from vlmr.calibrate.metrics import evaluate_scores
from vlmr.calibrate.report import comparison_table
from vlmr.calibrate.scores import score_split

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json

RESULTS_VERSION = 1


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
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="vlmr evaluate", description=doc[0].split(": ", 1)[1],
                                epilog="example:\n" + doc[1] + "\n\n" + doc[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action=_ModelAction, dest="models", required=True, metavar="DIR",
                   help="reward-model directory (repeatable: one per model to compare)")
    p.add_argument("--calibration", action=_ModelAction, dest="models", metavar="FILE",
                   help="calibration.json for the preceding --model ('auto' = <model>/calibration.json)")
    p.add_argument("--name", action=_ModelAction, dest="models", metavar="NAME", help="column name for the preceding --model")
    p.add_argument("--data", required=True, help="labelled dataset directory (manifest.json + shards)")
    p.add_argument("--split", default="test", help="split to evaluate on (default test)")
    p.add_argument("--out", help="write every figure as JSON here")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--limit", type=int, help="score at most this many frames")
    p.add_argument("--ece-bins", type=int, default=15)
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached similarity matrices")
    p.add_argument("--logger", choices=("none", "csv", "wandb"), default="none",
                   help="also log results (W&B offline unless WANDB_MODE is set)")
    p.add_argument("--wandb-project", default="vlmr")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def evaluate(models: list[dict], data: str, split: str = "test", out: str | None = None, batch_size: int = 256,
             device: str = "auto", limit: int | None = None, ece_bins: int = 15, cache: bool = True,
             logger: str = "none", wandb_project: str = "vlmr", progress: bool = True) -> dict:
    """Evaluate each {"dir", "calibration", "name"}; returns (and writes to `out`) the results dict."""
    from vlmr.finetune.reward_model import RewardModel

    from vlmr.core.dataset import MANIFEST_FILE, read_manifest
    from vlmr.core.files import sha256_file

    t0 = time.time()
    device = resolve_device(device)
    manifest = read_manifest(data)
    names = [m["name"] or Path(m["dir"]).name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise VlmrError(f"two models would share the column name(s) {dupes}; give each a distinct --name")
    results = []
    for spec, name in zip(models, names):
        cal = spec["calibration"]
        if cal == "auto":
            cal = str(Path(spec["dir"]) / "calibration.json")
            if not Path(cal).is_file():
                raise VlmrError(f"--calibration auto: {cal} does not exist; run `vlmr calibrate` for {spec['dir']}")
        rm = RewardModel.load(spec["dir"], calibration=cal, device=device)
        cache_dir = None if not cache else Path(spec["dir"]) / "calibration"
        scores = score_split(rm, data, split, batch_size, cache_dir, limit, progress, f"reward model {spec['dir']}")
        if int(scores.labels.sum()) == 0:
            raise VlmrError(f"split {split!r} of {data} has no positive label for any goal; precision, recall and "
                            "AUROC are undefined there. Evaluate on a split where goals are reached.")
        metrics = evaluate_scores(scores.sims, scores.labels, scores.own_goal, rm.temperatures.cpu(),
                                  rm.thresholds.cpu(), rm.goals, ece_bins)
        results.append({"name": name, "dir": str(spec["dir"]), "model_id": rm.model_id, "arch": rm.spec.arch,
                        "calibration": cal, "temperatures": rm.temperatures.cpu().tolist(),
                        "thresholds": rm.thresholds.cpu().tolist(), "metrics": metrics})
    out_dict = {"version": RESULTS_VERSION, "split": split,
                "data": {"dir": str(data), "name": manifest.get("name"),
                         "manifest_sha256": sha256_file(Path(data) / MANIFEST_FILE), "limit": limit},
                "models": results}
    table = comparison_table(results)
    print(f"vlmr evaluate: {split} split of {data} ({results[0]['metrics']['frames']} frames)")
    print(table)
    for note in results[0]["metrics"]["notes"]:
        print(f"note: {note}")
    if out:
        atomic_write_json(out, out_dict)
        print(f"wrote {out}")
    _log(logger, out_dict, wandb_project, out, time.time() - t0)
    return out_dict


def _log(logger: str, results: dict, project: str, out: str | None, seconds: float) -> None:
    from vlmr.core.provenance import run_info
    from vlmr.core.tracking import flatten, log_results

    if logger == "none":
        return
    keys = ("precision", "recall", "f1", "auroc", "ap", "ece")
    scalars = {}
    for m in results["models"]:
        for view in ("pooled", "own_goal"):
            macro = (m["metrics"]["macro"].get(view) or {})
            scalars.update(flatten(f"reward/{m['name']}/macro_{view}", {k: macro.get(k) for k in keys}))
    cols = ["model", "view", *keys]
    rows = [[m["name"], view, *((m["metrics"]["macro"].get(view) or {}).get(k) for k in keys)]
            for m in results["models"] for view in ("own_goal", "pooled")]
    out_dir = Path(out).parent if out else Path(".")
    info = run_info({"models": [{k: m[k] for k in ("name", "dir", "calibration")} for m in results["models"]],
                     "data": results["data"], "split": results["split"]}) | {"stage": "evaluate",
                                                                            "seconds": round(seconds, 2)}
    log_results(logger, out_dir, scalars, info, project, "evaluate", (cols, rows), job_type="evaluate")


def main(argv: list[str] | None = None) -> int:
    with cli_warnings():
        return _main(argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    for k in ("batch_size", "ece_bins", "limit"):
        v = getattr(args, k)
        if v is not None and v < 1:
            raise VlmrError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    evaluate(args.models, args.data, args.split, args.out, args.batch_size, args.device, args.limit, args.ece_bins,
             not args.no_cache, args.logger, args.wandb_project, progress=not args.quiet)
    return 0
