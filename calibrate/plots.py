"""Calibration plots (matplotlib, Agg): PR curves, reliability diagrams, score histograms.

    paths = write_plots(art_dir, rm, fit, val, test, metrics, cfg, crit)   # what `vlmr calibrate` writes
    plot_pr_curves(out_dir, goals, val=(probs, labels), test=(probs, labels), thresholds, fallback)
    plot_reliability(out_dir, {"before ...": {"pooled": (probs, labels, ece)}, "after ...": {...}})
    plot_histograms(out_dir, goals, test=(probs, labels), thresholds, fallback)

Per-goal figures are small multiples, GOALS_PER_PAGE goals to a page
(pr_curves-1.png, pr_curves-2.png, ...). Every file is written atomically by
vlmr.core.reporting.save_figure. Operating points come from vlmr.core.metrics:
a threshold with no predicted positive has no precision, so no point is drawn.

Tests: `.venv/bin/python -m pytest tests/test_calibrate_stage.py -q`
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from vlmr.calibrate.fitting import goal_probs, pr_curve

from vlmr.core.metrics import count_metrics
from vlmr.core.reporting import pyplot, save_figure

GOALS_PER_PAGE = 12
COLS = 4
DPI = 80  # small multiples of a dozen goals stay a few hundred kB


def write_plots(art: Path, rm, fit, val, test, metrics: dict, crit, n_bins: int) -> list[Path]:
    """Every figure of one calibration: val/test Scores, its CalibrationFit and evaluate_scores metrics."""
    temps = torch.tensor(fit.temperatures)
    defaults = torch.full((len(rm.goals),), float(rm.spec.temperature))
    val_p = goal_probs(torch.from_numpy(val.sims), temps).numpy()
    test_p = goal_probs(torch.from_numpy(test.sims), temps).numpy()
    before_p = goal_probs(torch.from_numpy(test.sims), defaults).numpy()
    fallback = [e["fallback"] for e in fit.goals]
    target = crit.target_precision if crit.name == "precision_at" else None
    own = (val.own_goal, test.own_goal) if fit.threshold_frames == "own_goal" else None  # curves where beta was fitted
    paths = plot_pr_curves(art, rm.goals, (val_p, val.labels), (test_p, test.labels), fit.thresholds, fallback, target,
                           own)
    rows = np.flatnonzero(test.own_goal >= 0)
    cols = test.own_goal[rows]

    def views(p, ece):
        out = {"pooled": (p.ravel(), test.labels.ravel(), ece["pooled"])}
        if len(rows):
            out["own-goal"] = (p[rows, cols], test.labels[rows, cols], ece["own_goal"])
        return out

    def ece(suffix):
        return {v: (metrics[v] or {}).get(f"ece{suffix}") for v in ("pooled", "own_goal")}

    paths.append(plot_reliability(art, {"before temperature fit": views(before_p, ece("_before")),
                                        "after temperature fit": views(test_p, ece(""))}, n_bins))
    paths += plot_histograms(art, rm.goals, (test_p, test.labels), fit.thresholds, fallback)
    return paths


def _pages(num_goals: int) -> list[range]:
    return [range(s, min(s + GOALS_PER_PAGE, num_goals)) for s in range(0, num_goals, GOALS_PER_PAGE)]


def _grid(n: int, title: str):
    plt = pyplot()
    cols = min(COLS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title)
    return fig, list(axes.flat[:n])


def _short(goal: str, width: int = 34) -> str:
    return goal if len(goal) <= width else goal[:width - 1] + "…"


def _operating_point(probs, labels, threshold) -> tuple[float, float] | None:
    """(recall, precision) of reward = 1[P >= threshold]; None where either is undefined."""
    m = count_metrics(probs >= threshold, labels > 0)
    return None if m["precision"] is None or m["recall"] is None else (m["recall"], m["precision"])


def plot_pr_curves(out_dir: Path, goals, val, test, thresholds, fallback, target_precision=None,
                   own_goal=None) -> list[Path]:
    """Per-goal PR curves on the fitting (dashed) and test (solid) splits, the chosen threshold marked on each.

    own_goal: (fitting, test) missions (N,) of each split: each goal's curves are over its own episodes' frames."""
    paths = []
    which = "every frame" if own_goal is None else "each goal's own episodes"
    own_goal = own_goal or (None, None)
    for page, idx in enumerate(_pages(len(goals)), start=1):
        fig, axes = _grid(len(idx), f"PR curves on {which} (dashed: fitting split, solid: test); o = chosen threshold")
        for ax, g in zip(axes, idx):
            for (probs, labels), own, style, name in ((val, own_goal[0], "--", "fit"), (test, own_goal[1], "-", "test")):
                rows = slice(None) if own is None else np.flatnonzero(own == g)
                probs, labels = probs[rows], labels[rows]
                y = labels[:, g]
                if y.sum() == 0:
                    continue
                p, r, _ = pr_curve(torch.as_tensor(probs[:, g]), torch.as_tensor(y))
                line, = ax.plot(r, p, style, lw=1.2, label=name)
                point = _operating_point(probs[:, g], y, thresholds[g])
                if point is not None:
                    ax.plot(*point, "o", color=line.get_color(), ms=5)
            if target_precision is not None:
                ax.axhline(target_precision, color="grey", lw=0.6, ls=":")
            tag = " (fallback)" if fallback[g] else ""
            ax.set_title(f"{_short(goals[g])}{tag}\nbeta = {thresholds[g]:.3g}", fontsize=8)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=7)
        axes[0].set_xlabel("recall", fontsize=8)
        axes[0].set_ylabel("precision", fontsize=8)
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(fontsize=7, loc="lower left")
        paths.append(save_figure(fig, Path(out_dir) / f"pr_curves-{page}.png", DPI))
    return paths


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """(mean confidence, observed frequency, count) per equal-width bin; empty bins are dropped."""
    probs, labels = np.asarray(probs, dtype=np.float64).ravel(), np.asarray(labels, dtype=np.float64).ravel()
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf = np.bincount(bins, weights=probs, minlength=n_bins)
    freq = np.bincount(bins, weights=labels, minlength=n_bins)
    keep = count > 0
    return conf[keep] / count[keep], freq[keep] / count[keep], count[keep]


def plot_reliability(out_dir: Path, curves: dict[str, dict[str, tuple]], n_bins: int = 15) -> Path:
    """Reliability diagrams, one panel per setting (before / after), one line per view (pooled / own-goal).

    curves = {"before temperature fit": {"pooled": (probs, labels, ece), "own-goal": (...)}, "after ...": {...}}
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4), squeeze=False)
    for ax, (title, views) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        for view, (probs, labels, ece) in views.items():
            if len(probs) == 0:
                continue
            conf, freq, count = reliability_bins(probs, labels, n_bins)
            ece_txt = f", ECE {ece:.3f}" if ece is not None else ""
            ax.plot(conf, freq, "o-", ms=3, lw=1.2, label=f"{view}{ece_txt}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted P(g|o)")
        ax.set_ylabel("observed frequency")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, Path(out_dir) / "reliability.png", DPI)


def plot_histograms(out_dir: Path, goals, test, thresholds, fallback) -> list[Path]:
    """Per-goal histograms of calibrated P(g|o) on the test split, positives against negatives, threshold marked."""
    from matplotlib.ticker import MaxNLocator

    probs, labels = test
    paths = []
    for page, idx in enumerate(_pages(len(goals)), start=1):
        fig, axes = _grid(len(idx), "test P(g|o): positives vs negatives (log count); | = threshold")
        for ax, g in zip(axes, idx):
            y = labels[:, g] > 0
            # P(g|o) of a weak model crowds near 1/C: bin over the range the scores actually use
            lo = min(float(probs[:, g].min()), thresholds[g])
            hi = max(float(probs[:, g].max()), thresholds[g])
            edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 26)
            ax.hist(probs[~y, g], bins=edges, alpha=0.6, label=f"neg ({int((~y).sum())})", color="tab:red")
            ax.hist(probs[y, g], bins=edges, alpha=0.6, label=f"pos ({int(y.sum())})", color="tab:green")
            ax.axvline(thresholds[g], color="black", lw=1)
            ax.set_yscale("log", nonpositive="clip")
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_title(_short(goals[g]) + (" (fallback)" if fallback[g] else ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6)
        paths.append(save_figure(fig, Path(out_dir) / f"histograms-{page}.png", DPI))
    return paths
