"""`vlmr compare`'s outputs: report.md (a table of arms, a line per contrast) and the plots.

    report_markdown(summary, cfg)   # summary: the results.json that vlmr.rl.experiments.compare.aggregate writes
    plot_curves(summary, out_dir)   # success_curves.png, reward_precision.png, capability.png (3+ reward arms)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from vlmr.rl.experiments.capability import capability_lines, distinct_sizes, plot_capability
from vlmr.rl.experiments.compare_summary import interval_note
from vlmr.rl.experiments.stats import METHODS, none_to_nan

from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json
from vlmr.core.reporting import fmt, fmt_ci, pyplot, save_figure

if TYPE_CHECKING:  # only a type here; compare.py imports this module
    from vlmr.rl.experiments.compare import CompareConfig


def report_markdown(summary: dict, cfg: CompareConfig) -> str:
    """report.md: one table row per arm, one line per contrast, the plots, and how to read them."""
    rl = cfg.rl
    method = (summary.get("interval") or {}).get("method", cfg.interval)
    lines = [f"# Reward A/B comparison: {rl.env_id}", "",
             f"PPO, {rl.total_timesteps} env steps per run, seeds {summary['seeds']}, same settings for every arm; "
             f"only the reward differs. Success is the env's own success on held-out env seeds (from "
             f"{rl.eval_seed}); the final value uses {rl.final_eval_episodes} episodes. Brackets: {cfg.ci * 100:g}% "
             f"{METHODS[method]} over seeds." + (f" Env options: {rl.env_kwargs}." if rl.env_kwargs else ""), "",
             "| arm | reward | runs | final success | success AUC | reward precision | reward recall | SPS |",
             "|---|---|---|---|---|---|---|---|"]
    for arm in summary["arms"]:
        name = arm["name"]
        reward = "env's own reward" if arm["reward_model"] is None else f"`{arm['reward_model']}`" + (
            " + calibration" if arm["calibration"] else "")
        lines.append(f"| {name} | {reward} | {len(arm['seeds'])}/{len(summary['seeds'])} | "
                     f"{fmt_ci(arm['final_success'])} | {fmt_ci(arm['auc'])} | {fmt_ci(arm['reward_precision'])} | "
                     f"{fmt_ci(arm['reward_recall'])} | {fmt(_mean(arm['sps']), 0)} |")
    for key, d in summary["comparisons"].items():
        lines += ["", f"**{key}**: {fmt_ci(d)} ({contrast_verdict(d)}); {d.get('statistic', 'unpaired')}."]
    lines += ["", "![success](success_curves.png)", "", "![precision](reward_precision.png)"]
    capability = summary.get("capability")
    if capability:
        lines += ["", "## Agent success against reward quality", "",
                  "One point per reward arm: its reward quality on the test split (calibration file) and on the "
                  "agents' rollouts, against the agents' final success. Rank correlations over the arms:", ""]
        lines += capability_lines(capability)
        lines += ["", "![capability](capability.png)"]
        if distinct_sizes(capability) < 2:
            lines += ["", "Every reward arm has the same parameter count, so reward quality against model size is "
                      "left to `vlmr scaling`."]
    lines += ["", "Notes:"] + interval_note({a["name"]: len(a["seeds"]) for a in summary["arms"]}, cfg.ci, method)
    lines += ["- success AUC: area under success rate vs env steps divided by the step range (mean success "
              "during training; rewards faster learning).",
              "- reward precision / recall: on the policy's own training rollouts, how often the VLM reward's "
              "'goal reached' agreed with the env's success (pooled per run). Low precision is reward hacking: "
              "the policy is paid for frames that are not successes."]
    if any(arm["reward_model"] and _offline_arch(arm["reward_model"]) for arm in summary["arms"]):
        lines.append("- These reward models are small CLIPs from vlmr's offline configs; their base is "
                     "pretrained by vlmr on a generated shapes corpus, a stand-in for web-scale CLIP.")
    if summary["missing"]:
        lines.append("- Missing or stale runs (not in the table): " + ", ".join(
            f"{m['arm']} seed {m['seed']} ({m['status']})" for m in summary["missing"]))
    return "\n".join(lines) + "\n"


def contrast_verdict(d: dict) -> str:
    if d["lo"] is None or d["hi"] is None:
        return "too few seeds for an interval"
    return "better" if d["lo"] > 0 else "worse" if d["hi"] < 0 else "not distinguishable at this number of seeds"


def _mean(v):
    """A {"mean": ...} record, or a bare number from a results.json of version 1 -> the number."""
    return v.get("mean") if isinstance(v, dict) else v


def _offline_arch(model_dir: str) -> bool:
    try:
        return str(read_json(Path(model_dir) / "reward_model.json").get("arch", "")).startswith("vlmr-")
    except (VlmrError, AttributeError):
        return False


def plot_curves(summary: dict, out: Path) -> None:
    """success_curves.png and reward_precision.png: mean and CI band over seeds, one colour per arm."""
    plt = pyplot()
    for filename, key, ylabel in (("success_curves.png", "success_curve", "held-out success rate"),
                                  ("reward_precision.png", "precision_curve", "VLM reward precision")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, arm in enumerate(summary["arms"]):  # colour by arm index: the same arm, the same colour in both
            curve = arm.get(key)
            if not curve:
                continue
            x, mean = np.asarray(curve["env_steps"]), none_to_nan(curve["mean"])
            ax.plot(x, mean, label=arm["name"], color=f"C{i}")
            ax.fill_between(x, none_to_nan(curve["lo"]), none_to_nan(curve["hi"]), alpha=0.2, color=f"C{i}")
        ax.set_xlabel("env steps")
        ax.set_ylabel(ylabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no VLM-reward arm", ha="center", va="center", transform=ax.transAxes)
        save_figure(fig, out / filename)
    if summary.get("capability"):
        plot_capability(summary["capability"], out / "capability.png",
                        params_panel=distinct_sizes(summary["capability"]) >= 2)
