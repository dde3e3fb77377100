"""Text outputs: the calibration report (report.md) and the side-by-side evaluation table.

Numbers go through vlmr.core.reporting.fmt: undefined values (null in the JSON) read "n/a".

    text = calibration_report(calibration_dict, plot_names)     # markdown
    print(comparison_table(evaluation["models"]))                # vlmr evaluate's table
"""

from __future__ import annotations

from vlmr.core.reporting import fmt

NA = fmt(None)  # an undefined value or a view without frames


def before_after(m: dict | None, key: str) -> str:
    if m is None:
        return NA
    b, a = m.get(f"{key}_before"), m.get(key)
    return fmt(a) if f"{key}_before" not in m else f"{fmt(b)} → {fmt(a)}"


def _view_row(name: str, m: dict | None, counts: bool = True) -> str:
    if m is None:
        return f"| {name} |" + f" {NA} |" * 8
    pos = str(m["positives"]) if counts and "positives" in m else NA
    neg = str(m["negatives"]) if counts and "negatives" in m else NA
    return (f"| {name} | {fmt(m.get('precision'))} | {fmt(m.get('recall'))} | {fmt(m.get('f1'))} | "
            f"{before_after(m, 'auroc')} | {before_after(m, 'ap')} | {before_after(m, 'ece')} | {pos} | {neg} |")


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def _own(m: dict | None) -> str:
    if m is None:
        return NA
    return f"{fmt(m['precision'], 2)} / {fmt(m['recall'], 2)} ({m['positives']} / {m['negatives']})"


def _skipped(part: dict) -> str:
    n = part.get("skipped") or 0
    return f"; **{n} damaged samples skipped**" if n else ""


def _guarantee_lines(summary: dict, crit: dict) -> list[str]:
    own, every = summary.get("test_own_goal") or {}, summary.get("test_all_frames") or {}
    return [
        "## Guarantee",
        "",
        f"{summary['guaranteed']} of {summary['goals']} goals ({summary['share']:.0%}) hold a threshold whose precision "
        f">= {crit['target_precision']:g} is guaranteed with confidence {crit['confidence']:g} on the fitting split. "
        f"Test precision pooled over those goals: own-goal {fmt(own.get('precision'))} "
        f"({own.get('tp', 0)} of {own.get('tp', 0) + own.get('fp', 0)} rewarded frames correct), all frames "
        f"{fmt(every.get('precision'))}. The other goals use the point estimate or the pooled fallback and claim "
        "nothing; a binary reward warns about them at load.",
        "",
    ]


def _goal_table(title: str, goals: dict[str, dict]) -> list[str]:
    lines = [f"## {title}", ""]
    if not goals:
        return lines + ["None.", ""]
    lines += [
        "Test split, every frame scored for the goal; last column: only its own episodes' frames. Bound: the lower "
        "confidence bound on precision at the threshold (fit split); for goals without a guarantee, the best bound "
        "any threshold reaches and the predicted positives it would still need.",
        "",
        "| goal | temperature | threshold | fallback | target met | bound | positives | negatives | precision | "
        "recall | F1 | AUROC | AP | ECE | own-goal P / R (pos / neg) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for goal, e in goals.items():
        t = e["test"]
        met = NA if e["target_met"] is None else ("yes" if e["target_met"] else "**no**")
        lines.append(f"| {_cell(goal)} | {e['temperature']:.4g} | {e['threshold']:.4g} | "
                     f"{'yes' if e['fallback'] else 'no'} | {met} | {_bound(e)} | {t['positives']} | {t['negatives']} | "
                     f"{fmt(t['precision'])} | {fmt(t['recall'])} | {fmt(t['f1'])} | {before_after(t, 'auroc')} | "
                     f"{before_after(t, 'ap')} | {before_after(t, 'ece')} | {_own(e.get('test_own'))} |")
    return lines + [""]


def _bound(e: dict) -> str:
    if e.get("guaranteed"):
        return fmt(e.get("precision_bound"))
    if e.get("fallback"):
        return "none (pooled fit)" if e.get("guaranteed") is not None else NA
    if e.get("best_bound") is None:
        return NA
    need = e.get("more_predicted_needed")
    if need == 0:  # the bound is there, lower down: a high-scoring mistake failed the sequence first
        return f"best {fmt(e['best_bound'])}, scan stopped at {fmt(e.get('scan_stopped_at'))}"
    return f"best {fmt(e['best_bound'])}, " + ("precision too low" if need is None else f"+{need} needed")


def _dataset_lines(fit: dict, metrics: dict) -> list[str]:
    """A table of each dataset's own test figures, when several were calibrated together (extra_data)."""
    fits, tests = fit.get("datasets") or [], metrics.get("datasets") or []
    if len(tests) < 2:
        return []
    lines = ["", "## Per dataset", "",
             "The fit used every dataset's fit-split frames together; the table above is over every dataset's test "
             "frames, these rows are each dataset's own.", "",
             "| dataset | fit frames | test frames | own-goal precision | own-goal recall | own-goal AUROC | "
             "pooled precision | pooled recall | pooled AUROC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for f, t in zip(fits, tests):
        own, pooled = t.get("own_goal") or {}, t.get("pooled") or {}
        skipped = f" ({f['skipped']} + {t['skipped']} skipped)" if f["skipped"] or t["skipped"] else ""
        lines.append(f"| `{_cell(str(t['name']))}` ({_cell(t['path'])}){skipped} | {f['frames']} | {t['frames']} | "
                     f"{fmt(own.get('precision'))} | {fmt(own.get('recall'))} | {fmt(own.get('auroc'))} | "
                     f"{fmt(pooled.get('precision'))} | {fmt(pooled.get('recall'))} | {fmt(pooled.get('auroc'))} |")
    return lines + [""]


def calibration_report(cal: dict, plots: list[str]) -> str:
    fit, metrics, crit = cal["fit"], cal["metrics"], cal["criterion"]
    shared = fit["shared"]
    lines = [
        "# Calibration report",
        "",
        f"Reward model `{cal['model_id'][:12]}` ({fit['model']['arch']}, {len(cal['goals'])} goals). "
        f"Dataset `{fit['data']['name']}` (manifest sha256 `{fit['data']['manifest_sha256'][:12]}`)"
        + "".join(f", with `{d['name']}` (`{d['manifest_sha256'][:12]}`)" for d in (fit.get("datasets") or [])[1:])
        + ".",
        "",
        f"- Fitted on split `{fit['split']}` ({fit['frames']} frames{_skipped(fit)}); every metric below is on the "
        f"held-out split `{metrics['split']}` ({metrics['frames']} frames{_skipped(metrics)}).",
        f"- Threshold criterion: {crit['description']}; "
        + ("chosen on each goal's own episodes' frames only, where its reward is paid (`threshold_frames: own_goal`)"
           if fit.get("threshold_frames") == "own_goal" else "chosen on every frame scored for the goal") + ".",
        f"- Temperature: per goal, maximum likelihood of P(g|o) against the labels, searched over "
        f"[{fit['temperature_bounds'][0]:g}, {fit['temperature_bounds'][1]:g}] in log space.",
        f"- Goals with fewer than {fit['min_positives']} positives (or no negatives) in `{fit['split']}` get the "
        f"shared fallback: temperature {shared['temperature']:.4g}, threshold {shared['threshold']:.4g} "
        f"({shared['how']}). {sum(1 for g in cal['goals'].values() if g['fallback'])} of {len(cal['goals'])} goals use it.",
        *([f"- Goals outside the goal set (new goals at load, goals held out of fine-tuning): "
           f"{fit['new_goal_note']}; they are never `calibrated`."] if fit.get("new_goal_note") else []),
        f"- \"before\" is the reward model's default temperature {fit['defaults']['temperature']:g} and threshold "
        f"{fit['defaults']['threshold']:g}; \"after\" is this calibration.",
        "",
        "## Reward quality on the test split",
        "",
        "Own-goal: each frame scored only for its own episode's mission (what the RL reward sees); "
        "pooled: every (frame, goal) pair. Micro = over pairs, macro = mean over goals.",
        "",
        "| view | precision | recall | F1 | AUROC | AP | ECE | positives | negatives |",
        "|---|---|---|---|---|---|---|---|---|",
        _view_row("**own-goal, macro**", (metrics["macro"] or {}).get("own_goal"), counts=False),
        _view_row("own-goal, micro", metrics["own_goal"]),
        _view_row("pooled, macro", metrics["macro"]["pooled"], counts=False),
        _view_row("pooled, micro", metrics["pooled"]),
        "",
    ]
    lines += [f"_{n}_" for n in metrics.get("notes", [])]
    lines += _dataset_lines(fit, metrics)
    summary = cal.get("guarantee")
    if summary is None:
        lines += _goal_table("Per goal", cal["goals"])
    else:
        lines += _guarantee_lines(summary, crit)
        ok = {g: e for g, e in cal["goals"].items() if e.get("guaranteed")}
        lines += _goal_table("Goals with a guaranteed threshold", ok)
        lines += _goal_table("Goals without a guarantee (fallback, or no bound reaches the target)",
                             {g: e for g, e in cal["goals"].items() if g not in ok})
    undefined = sorted({n for e in cal["goals"].values() for n in e["test"]["notes"]})
    if undefined:
        lines += ["", "Notes on the per-goal figures:", *[f"- {n}" for n in undefined]]
    if cal.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- {w}" for w in cal["warnings"]]]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


TABLE_ROWS = [("own-goal", "own_goal", k) for k in ("precision", "recall", "f1", "auroc", "ece")] + \
             [("pooled", "pooled", k) for k in ("precision", "recall", "f1", "auroc", "ece")]
LABELS = {"precision": "precision", "recall": "recall", "f1": "F1", "auroc": "AUROC", "ece": "ECE"}


def comparison_table(models: list[dict]) -> str:
    """Macro metrics of several evaluated reward models, side by side; "n/a" where undefined."""
    names = [m["name"] for m in models]
    width = max(10, *(len(n) for n in names))
    head = f"{'macro metric':<22}" + "".join(f" {n:>{width}}" for n in names)
    lines = [head, "-" * len(head)]
    for view_name, view, key in TABLE_ROWS:
        cells = []
        for m in models:
            v = (m["metrics"]["macro"].get(view) or {}).get(key)
            cells.append(f" {fmt(v):>{width}}")
        lines.append(f"{view_name + ' ' + LABELS[key]:<22}" + "".join(cells))
    lines.append(f"{'calibration':<22}" + "".join(f" {'fitted' if m['calibration'] else 'defaults':>{width}}"
                                                  for m in models))
    return "\n".join(lines)
