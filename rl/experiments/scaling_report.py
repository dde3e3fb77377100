"""The scaling study's outputs from its rows (one per model size): results.json's statistics, the plots, report.md.

    agents_of(compare_results)        # a chain's compare results.json -> per-arm agent records, paired contrasts
    plot_scaling(rows, "scaling.png") # reward quality (and agent success) against parameter count, per arm
    plot_curves(rows, "curves.png")   # each size's validation curve per trained stage (what early stopping saw)
    write_outputs(name, pipeline, rows, out_dir, config)   # results.json, scaling.png, curves.png, capability.png,
                                                           # report.md

A row: {"arch", "params", "image_size", "frame_size", "view", "arms": {arm: {"auroc", "precision", "recall",
"final_success", "rollout_precision"}}, "comparisons", "interval"}. Agent statistics are recomputed here from each
compare's per-seed values, so `vlmr scaling --plot-only` gives the current intervals from finished runs.
"""

from __future__ import annotations

from pathlib import Path

from vlmr.rl.experiments.capability import (
    capability_lines,
    capability_summary,
    plot_capability,
    scaling_points,
)
from vlmr.rl.experiments.compare_report import contrast_verdict
from vlmr.rl.experiments.compare_summary import contrasts, interval_note
from vlmr.rl.experiments.scaling_rows import TRAINED_STAGES
from vlmr.rl.experiments.stats import METHODS, nan_to_none, seed_record

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, atomic_write_text
from vlmr.core.reporting import fmt, fmt_ci, pyplot, save_figure

COMPARE_VERSIONS = (1, 2)  # compare results.json versions whose per-seed values this reads
AGENT_METRICS = {"final_success": "final_success", "rollout_precision": "reward_precision"}  # row key -> compare key


def agents_of(results: dict, path: str = "compare results") -> tuple[dict, dict, dict]:
    """(arms, comparisons, interval) from a compare results.json: each arm's final success and rollout reward
    precision and the configured contrasts, recomputed from the per-seed values with the compare's ci and method."""
    if results.get("version") not in COMPARE_VERSIONS:
        raise VlmrError(f"{path} has version {results.get('version')!r}; this vlmr reads {list(COMPARE_VERSIONS)}. "
                        "Rerun `vlmr compare CONFIG --aggregate` (or `vlmr pipeline`) to rewrite it.")
    cfg = results.get("config") or {}
    ci, method = cfg.get("ci", 0.95), cfg.get("interval", "t")  # version 1 had no method key; t is this vlmr's
    arms = {a["name"]: {"seeds": a["seeds"], **{key: seed_record(a[src]["values"], ci, method)
                                                 for key, src in AGENT_METRICS.items()}} for a in results["arms"]}
    comparisons = contrasts([tuple(p) for p in cfg.get("contrasts") or []], results["arms"], ci, method)
    return arms, comparisons, {"method": method, "name": METHODS[method], "ci": ci}


def arm_names(rows: list[dict]) -> list[str]:
    """Every arm of the chains, in the order they first appear (the pipeline's: zero_shot, adapted, ...)."""
    return list(dict.fromkeys(a for r in rows for a in r["arms"]))


def _mean(v):
    """A metric or a {'mean': ...} interval record -> its value."""
    return v.get("mean") if isinstance(v, dict) else v


def _has_agents(rows: list[dict]) -> bool:
    return any("final_success" in a for r in rows for a in r["arms"].values())


def plot_scaling(rows: list[dict], out: Path) -> Path:
    """Test AUROC and precision per arm against parameter count; agent success (with its interval) when trained."""
    plt = pyplot()
    view = "/".join(sorted({r.get("view", "own-goal") for r in rows}))
    panels = [("auroc", f"{view} AUROC (test)"), ("precision", "precision at calibrated threshold (test)")]
    if _has_agents(rows):
        panels.append(("final_success", "agent success (ground truth)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for i, arm in enumerate(arm_names(rows)):
            recs = [(r["params"], r["arms"].get(arm, {}).get(key)) for r in rows]
            recs = [(x, v) for x, v in recs if _mean(v) is not None]  # undefined: skipped, never drawn as 0
            if not recs:
                continue
            xs, ys = [x for x, _ in recs], [_mean(v) for _, v in recs]
            bounded = all(isinstance(v, dict) and v.get("lo") is not None for _, v in recs)
            err = [[y - v["lo"] for y, (_, v) in zip(ys, recs)], [v["hi"] - y for y, (_, v) in zip(ys, recs)]] \
                if bounded else None
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=arm, color=f"C{i}")
        ax.set_xscale("log")
        ax.set_xticks([r["params"] for r in rows], [f"{r['arch']}\n{r['params'] / 1e6:.1f}M" for r in rows],
                      fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("parameters (both towers)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    return save_figure(fig, out, dpi=120)


def _curve_stages(rows: list[dict]) -> list[str]:
    return [s for s in TRAINED_STAGES if any(((r.get("training") or {}).get(s) or {}).get("curve") for r in rows)]


def plot_curves(rows: list[dict], out: Path) -> Path | None:
    """Per trained stage, each size's validation metric (the one early stopping watched) against steps; a dotted
    line marks the best step, the checkpoint kept. None when no chain recorded a curve."""
    stages = _curve_stages(rows)
    if not stages:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(stages), figsize=(4.8 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        monitors = set()
        for i, r in enumerate(rows):
            rec = (r.get("training") or {}).get(stage) or {}
            points = [(p["step"], p["value"]) for p in rec.get("curve") or [] if p.get("value") is not None]
            if not points:
                continue
            monitors.add(rec.get("monitor"))
            ax.plot(*zip(*points), marker=".", color=f"C{i}", label=r["arch"])
            if rec.get("best_step") is not None:
                ax.axvline(rec["best_step"], color=f"C{i}", ls=":", alpha=0.7)
        ax.set_title(f"{stage}: {', '.join(sorted(m for m in monitors if m))} (select split)", fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out, dpi=120)


def budget_table(rows: list[dict]) -> list[str]:
    lines = ["| model | stage | stopped on | steps used | best step (kept) | stopped early | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for stage, rec in (r.get("training") or {}).items():
            early = {True: "yes", False: "no (hit max_steps)"}.get(rec.get("stopped_early"), "n/a")
            lines.append(f"| {r['arch']} | {stage} | {rec.get('monitor') or 'n/a'} | {rec.get('steps')} | "
                         f"{rec.get('best_step') if rec.get('best_step') is not None else 'n/a'} | {early} | "
                         f"{fmt(rec.get('train_seconds'), 0)} |")
    seconds = [r.get("chain_seconds") for r in rows]
    if all(s is not None for s in seconds):
        each = ", ".join(f"{r['arch']} {s / 60:.0f} min" for r, s in zip(rows, seconds))
        lines += ["", f"Compute: {sum(seconds) / 3600:.2f} h of stage wall time over {len(rows)} chains ({each})."]
    return lines


def guarantee_table(rows: list[dict]) -> list[str]:
    arms = [a for a in arm_names(rows) if any((r["arms"].get(a) or {}).get("guarantee") for r in rows)]
    lines = ["| model | " + " | ".join(f"{a} guaranteed goals | {a} precision over them (own-goal / all frames)"
                                      for a in arms) + " |", "|---|" + "---|---|" * len(arms)]
    for r in rows:
        cells = []
        for a in arms:
            g = (r["arms"].get(a) or {}).get("guarantee") or {}
            cells += [f"{g['guaranteed']} of {g['fitted']}" if g else "n/a",
                      f"{fmt(g.get('precision_own'))} / {fmt(g.get('precision_all'))}" if g else "n/a"]
        lines.append(f"| {r['arch']} | " + " | ".join(cells) + " |")
    return lines


def quality_table(rows: list[dict]) -> list[str]:
    # reward models only: ground truth has no AUROC
    arms = [a for a in arm_names(rows) if any(r["arms"].get(a, {}).get("auroc") is not None for r in rows)]
    lines = ["| model | params | frame px | model px | " + " | ".join(f"{a} AUROC | {a} precision" for a in arms) + " |",
             "|---|---|---|---|" + "---|---|" * len(arms)]
    for r in rows:
        cells = [fmt(r["arms"].get(a, {}).get(k)) for a in arms for k in ("auroc", "precision")]
        lines.append(f"| {r['arch']} | {r['params'] / 1e6:.1f}M | {r.get('frame_size', r['image_size'])} | "
                     f"{r['image_size']} | " + " | ".join(cells) + " |")
    return lines


def agent_table(rows: list[dict]) -> list[str]:
    def defined(arm, key):
        return any(_mean(r["arms"].get(arm, {}).get(key)) is not None for r in rows)

    # (arm, metric) columns that have a value somewhere: ground truth has no rollout reward precision
    cols = [(a, k) for a in arm_names(rows) for k in AGENT_METRICS if defined(a, k)]
    lines = ["| model | " + " | ".join(f"{a} {k.replace('_', ' ')}" for a, k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    lines += [f"| {r['arch']} | " + " | ".join(fmt_ci(r["arms"].get(a, {}).get(k)) for a, k in cols) + " |"
              for r in rows]
    lines.append("")
    for r in rows:
        lines += [f"- {r['arch']}, **{key}**: {fmt_ci(d)} ({contrast_verdict(d)}); {d['statistic']}."
                  for key, d in (r.get("comparisons") or {}).items() if key.endswith("/final_success")]
    return lines


def report(name: str, pipeline: str, rows: list[dict], capability: dict | None) -> str:
    lines = [f"# vlmr scaling study: {name}", "",
             f"One `{pipeline}` chain per model size. The base CLIPs are pretrained by vlmr on the synthetic "
             "shapes corpus, all with the same recipe: stand-ins for web-scale CLIP.", "",
             "![scaling](scaling.png)", "",
             f"Metrics: {'/'.join(sorted({r.get('view', 'own-goal') for r in rows}))}, test split; frame px: the size "
             "frames are rendered at, model px: the input size they are resized to.", ""] + quality_table(rows)
    lines += ["", "Goals whose calibrated threshold is guaranteed (precision target at the calibration's confidence, "
              "on val) and test precision pooled over those goals' frames:", ""] + guarantee_table(rows)
    if _curve_stages(rows):
        lines += ["", "## Budgets", "", "Each stage trains until its validation metric stops improving (patience "
                  "and max_steps in the config) and keeps its best checkpoint:", "", "![curves](curves.png)", ""]
        lines += budget_table(rows)
    kept = [r["arch"] for r in rows if r.get("kept_from_previous_results")]
    if kept:
        lines += ["", f"Rows of {', '.join(kept)} come from an earlier results.json (their chains ran elsewhere)."]
    if _has_agents(rows):
        interval = next(r["interval"] for r in rows if r.get("interval"))
        lines += ["", f"Agents: final ground-truth success and the reward's precision on the agents' own rollouts, "
                  f"mean [{interval['ci'] * 100:g}% {interval['name']}] over seeds; contrasts from each compare "
                  "config's `contrasts`:", ""] + agent_table(rows)
        if capability:
            lines += ["", "## Agent success against reward quality", "",
                      "One point per reward arm and model size (undefined values left out):", ""]
            lines += capability_lines(capability) + ["", "![capability](capability.png)"]
        counts = {f"{a} {r['arch']}": len(m["seeds"]) for r in rows for a, m in r["arms"].items() if "seeds" in m}
        lines += ["", "Notes:"] + interval_note(counts, interval["ci"], interval["method"])
    return "\n".join(lines) + "\n"


def write_outputs(name: str, pipeline: str, rows: list[dict], out: Path, config: dict) -> Path:
    """results.json, scaling.png, capability.png (when agents were trained) and report.md in out; returns report.md."""
    rows = nan_to_none(rows)  # undefined values are None from here on: skipped in plots, "n/a" in tables
    capability = capability_summary(scaling_points(rows)) if _has_agents(rows) else None
    atomic_write_json(out / "results.json", nan_to_none({"config": config, "rows": rows, "capability": capability}))
    plot_scaling(rows, out / "scaling.png")
    plot_curves(rows, out / "curves.png")
    if capability:
        plot_capability(capability, out / "capability.png")
    return atomic_write_text(out / "report.md", report(name, pipeline, rows, capability))
