"""Accuracy vs capability (the paper's second claim, measured directly): does a better reward give a better agent?

    points = compare_points(arms)               # one point per reward arm of a compare (results.json "arms")
    points = scaling_points(rows)               # one point per (arm, model size) of the scaling study
    capability_summary(points)                  # {"points": [...], "correlations": {...}}: what results.json keeps
    plot_capability(summary, "capability.png", params_panel=True)
    capability_lines(summary)                   # report lines with the rank correlations

Reward quality is measured twice: on the test split (own-goal AUROC where frames have missions, else pooled;
from the calibration file or the evaluate stage) and on the agents' own rollouts (precision of the reward's 'goal
reached' against the env's success). Each is set against the agents' final ground-truth success with Spearman's
rank correlation. Undefined values (None) are skipped, never plotted as 0.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from vlmr.rl.experiments.stats import rank_correlation

from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json
from vlmr.core.reporting import pyplot, save_figure

MIN_REWARD_ARMS = 3  # a compare plots accuracy against capability from this many reward-model arms
QUALITY = {"test_auroc": "reward AUROC, test split", "rollout_precision": "reward precision on the agents' rollouts"}


def calibrated_quality(calibration: str | None) -> dict | None:
    """Test-split quality of a calibrated reward model: {"view", "auroc", "precision"}; None without a file."""
    from vlmr.rl.experiments.pipeline_stages import headline

    from vlmr.core.calibration_file import read_calibration

    if not calibration or not Path(calibration).is_file():
        return None
    view, head = headline((read_calibration(calibration).get("metrics") or {}).get("macro") or {})
    return {"view": view, "auroc": head.get("auroc"), "precision": head.get("precision")}


@functools.cache
def arch_parameters(arch: str) -> int:
    """Parameters of an open_clip architecture (both towers), from a randomly initialised instance."""
    from vlmr.finetune.models import create_clip

    model, _ = create_clip(arch)
    return sum(p.numel() for p in model.parameters())


def reward_model_parameters(model_dir: str | None) -> tuple[str | None, int | None]:
    """(architecture, parameter count) of a reward-model directory; (None, None) if it cannot be read."""
    try:
        arch = read_json(Path(model_dir) / "reward_model.json", "reward model")["arch"]
    except (VlmrError, KeyError, TypeError):
        return None, None
    return arch, arch_parameters(arch)


def _value(v):
    """A metric or a {"mean": ...} record -> its value; None when undefined (None, NaN: a record not yet through
    nan_to_none)."""
    v = v.get("mean") if isinstance(v, dict) else v
    return None if v is None or not math.isfinite(v) else v


def compare_points(arms: list[dict]) -> list[dict]:
    """One point per reward-model arm of a compare summary (arms carry test_quality, params from aggregate)."""
    return [{"arm": a["name"], "label": a["name"], "arch": a.get("arch"), "params": a.get("params"),
             "test_auroc": (a.get("test_quality") or {}).get("auroc"),
             "rollout_precision": a.get("reward_precision"), "final_success": a.get("final_success")}
            for a in arms if a.get("reward_model")]


def scaling_points(rows: list[dict]) -> list[dict]:
    """One point per (reward arm, model size) of the scaling study's rows: arms with a test AUROC or a rollout
    reward precision (ground truth has neither)."""
    return [{"arm": arm, "label": f"{arm} {r['arch']}", "arch": r["arch"], "params": r["params"],
             "test_auroc": m.get("auroc"), "rollout_precision": m.get("rollout_precision"),
             "final_success": m.get("final_success")}
            for r in rows for arm, m in r["arms"].items()
            if m.get("auroc") is not None or _value(m.get("rollout_precision")) is not None]


def capability_summary(points: list[dict]) -> dict:
    """The points and, for each reward-quality measure, its rank correlation with final success."""
    success = [_value(p["final_success"]) for p in points]
    return {"points": points,
            "correlations": {key: rank_correlation([_value(p[key]) for p in points], success) for key in QUALITY}}


def correlation_text(c: dict) -> str:
    if c["rho"] is None:
        return f"Spearman rho n/a (n={c['n']}: needs 3 or more points that are not all equal)"
    return f"Spearman rho {c['rho']:+.2f} (p={c['p']:.2g}, n={c['n']})"


def capability_lines(summary: dict) -> list[str]:
    """Report lines: what is correlated with what, and how strongly."""
    return [f"- final success vs {QUALITY[key]}: {correlation_text(c)}" for key, c in summary["correlations"].items()]


def _errorbar(ax, points: list[dict], x_key: str, y_key: str, colours: dict) -> None:
    """One marker per point with its interval where it has one; undefined x or y: not drawn. Points are labelled
    with their architecture when there are several."""
    label_size = len({p["arch"] for p in points}) > 1
    for p in points:
        x, y = _value(p[x_key]), _value(p[y_key])
        if x is None or y is None:
            continue
        err = {}
        for axis, key in (("xerr", x_key), ("yerr", y_key)):
            rec = p[key]
            if isinstance(rec, dict) and _value(rec.get("lo")) is not None and _value(rec.get("hi")) is not None:
                err[axis] = [[rec["mean"] - rec["lo"]], [rec["hi"] - rec["mean"]]]
        ax.errorbar([x], [y], fmt="o", color=colours[p["arm"]], capsize=3, **err)
        if label_size:
            ax.annotate(p["arch"] or "?", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def plot_capability(summary: dict, path: str | Path, params_panel: bool = False) -> Path:
    """Final success against each reward-quality measure (one point per arm and size, rho in the title), and with
    params_panel, test AUROC against parameter count per arm."""
    plt = pyplot()
    points = summary["points"]
    arms = list(dict.fromkeys(p["arm"] for p in points))
    colours = {a: f"C{i}" for i, a in enumerate(arms)}
    panels = list(QUALITY) + (["params"] if params_panel else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8))
    for ax, key in zip(np.atleast_1d(axes), panels):
        if key == "params":
            for arm in arms:
                pts = sorted((p["params"], p["test_auroc"]) for p in points if p["arm"] == arm
                             and p["params"] is not None and p["test_auroc"] is not None)
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=colours[arm])
            ax.set_xscale("log")
            ax.set_xlabel("parameters (both towers)")
            ax.set_ylabel(QUALITY["test_auroc"])
            ax.set_title("reward quality vs model size", fontsize=9)
        else:
            _errorbar(ax, points, key, "final_success", colours)
            ax.set_xlabel(QUALITY[key])
            ax.set_ylabel("agent final success (ground truth)")
            ax.set_title(correlation_text(summary["correlations"][key]), fontsize=8)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[a], marker="o", linestyle="", label=a) for a in arms]
    if handles:
        np.atleast_1d(axes)[0].legend(handles=handles, fontsize=8)
    return save_figure(fig, path, dpi=110)


def compare_capability(arms: list[dict]) -> dict | None:
    """The capability summary of a compare with MIN_REWARD_ARMS or more reward arms (None with fewer); adds each
    reward arm's architecture and parameter count to its record."""
    reward_arms = [a for a in arms if a.get("reward_model")]
    if len(reward_arms) < MIN_REWARD_ARMS:
        return None
    for a in reward_arms:
        a["arch"], a["params"] = reward_model_parameters(a["reward_model"])
    return capability_summary(compare_points(arms))


def distinct_sizes(summary: dict) -> int:
    return len({p["params"] for p in summary["points"] if p["params"] is not None})
