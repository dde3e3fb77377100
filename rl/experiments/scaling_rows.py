"""What the scaling study keeps of one size's chain besides its headline metrics: budgets and guarantees.

    training_records(run_dir)        # base and adapted: steps used, best step, early stop, curve, seconds
    guarantee_record(run_dir, arm)   # guaranteed goals of an arm's calibration, and test precision pooled over them
    chain_seconds(run_dir)           # wall time of the chain's stages, as its stage records give it
    kept_rows(out_dir, archs)        # rows of a previous results.json, for sizes whose chain folder is gone

A row is small and self-contained, so a study run in pieces on several machines (or sessions) can carry
finished sizes forward in its results.json without their checkpoints: `vlmr scaling --plot-only` rebuilds
the report from the rows it has, and says which ones came from an earlier results.json.
"""

from __future__ import annotations

from pathlib import Path

from vlmr.core.files import read_json
from vlmr.core.metrics import pooled_count_metrics

TRAINED_STAGES = ("base", "adapted")  # the stages whose budget is set by early stopping in the scaling config


def _monitor(run_json: Path) -> tuple[str | None, str | None]:
    """(the metric early stopping watched, the curve key that holds it). Curves of runs from before vlmr kept
    each loss term hold only val/loss, which is that term when it is the run's only one, at weight 1."""
    cfg = read_json(run_json, "finetune run record").get("config") or {} if run_json.is_file() else {}
    monitor = ((cfg.get("trainer") or {}).get("early_stopping") or {}).get("monitor")
    terms = {k: w for k, w in (cfg.get("loss") or {}).items() if k in ("contrastive", "goal", "sigmoid") and w}
    alone = monitor is not None and terms == {monitor.removeprefix("val/loss_"): 1.0}
    return monitor, "val/loss" if alone else monitor


def training_records(run_dir: Path) -> dict:
    """Per trained stage: the budget it used and its validation curve (the metric it stopped on, per step)."""
    out = {}
    for stage in TRAINED_STAGES:
        path = run_dir / stage / "summary.json"
        if not path.is_file():  # a ready-made base (base_pretrained) has no base stage
            continue
        s = read_json(path, "finetune summary")
        monitor, key = _monitor(run_dir / stage / "run.json")
        curve = [{"step": p["step"], "value": p.get(monitor, p.get(key))} for p in s.get("val_curve") or [] if monitor]
        out[stage] = {"steps": s.get("steps"), "best_step": s.get("best_step"),
                      "stopped_early": s.get("stopped_early"), "train_seconds": s.get("train_seconds"),
                      "monitor": monitor, "curve": curve}
    return out


def guarantee_record(run_dir: Path, arm: str, per_goal: dict) -> dict | None:
    """The arm's guaranteed goals (calibration.json) and test precision pooled over their frames (evaluate's
    per-goal counts): own-goal (each frame for its own mission) and over every frame scored for them."""
    path = run_dir / arm / "reward_model" / "calibration.json"
    if not path.is_file():
        return None
    goals = read_json(path, "calibration").get("goals") or {}
    ok = [g for g, e in goals.items() if e.get("guaranteed")]
    pooled = {view: pooled_count_metrics([per_goal[g][view] for g in ok if (per_goal.get(g) or {}).get(view)])
              ["precision"] if ok else None for view in ("own", "all")}
    return {"guaranteed": len(ok), "fitted": len(goals), "share": len(ok) / len(goals) if goals else None,
            "precision_own": pooled["own"], "precision_all": pooled["all"]}


def chain_seconds(run_dir: Path) -> float | None:
    """Sum of the stages' recorded wall times (each stage's last finished run)."""
    records = sorted((run_dir / "pipeline").glob("*.json"))
    return round(sum(read_json(p, "pipeline stage record").get("wall_s", 0) for p in records), 1) if records else None


def kept_rows(out_dir: Path, archs: list[str]) -> dict[str, dict]:
    """Rows of the study's previous results.json, by arch, for the study's current sizes."""
    path = out_dir / "results.json"
    if not path.is_file():
        return {}
    rows = read_json(path, "scaling results").get("rows") or []
    return {r["arch"]: r for r in rows if r.get("arch") in archs}
