"""The report of a `vlmr pipeline` chain, runs/<name>/report.md, from the stages' outputs.

    write_final_report(cfg, run_dir, runner.rows, calibration_reports, eval_json, compare_report, seconds)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from vlmr.rl.experiments.pipeline_refine import refine_stages, refined_arm

from vlmr.core.files import atomic_write_text, read_json
from vlmr.core.reporting import fmt

if TYPE_CHECKING:  # only a type here; pipeline.py imports this module
    from vlmr.rl.experiments.pipeline import PipelineConfig


def write_final_report(cfg: PipelineConfig, run_dir: Path, rows: list[dict], cal_reports: dict[str, Path],
                       eval_json: Path, compare_report: Path | None, seconds: float) -> Path:
    """report.md of the chain: the stages, the prompts, reward quality on test, and the agents' report."""
    from vlmr.calibrate.report import comparison_table

    lines = [f"# vlmr pipeline: {cfg.name}", "",
             "The base CLIP here was pretrained by vlmr on a synthetic corpus of captioned shapes. It is a stand-in "
             "for web-scale CLIP, not a claim about it.", "",
             "## Stages", "", "| stage | wall s | skipped | summary |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r.get('wall_s', 0):.0f} | {'yes' if r['skipped'] else 'no'} | {r['summary']} |"
              for r in rows]
    lines += ["", f"Total wall time of this invocation: {seconds:.0f} s.", "", "## Prompts", "",
              "Every reward model of this run turns a goal into captions with these templates (ensembled), "
              "the reward model's own templates for any other goal:", ""]
    lines += [f"- {family}: " + "; ".join(f'"{t}"' for t in templates) for family, templates in
              cfg.goal_templates.items()] or ["- none: the goal sentence itself"]
    evaluated = read_json(eval_json)
    lines += ["", "## Reward quality (test split)", ""]
    lines += ["```", comparison_table(evaluated["models"]), "```", ""]
    lines += guarantee_lines(run_dir, evaluated["models"]) + group_lines(evaluated["models"])
    if evaluated.get("paraphrases"):
        from vlmr.calibrate.paraphrases import wording_table

        lines += [wording_table(evaluated["models"]), ""]
    lines += [f"- calibration report, {arm}: [{p.relative_to(run_dir)}]({p.relative_to(run_dir)})"
              for arm, p in cal_reports.items()]
    lines += refine_lines(run_dir)
    if compare_report is not None:
        rel = compare_report.relative_to(run_dir)
        lines += ["", "## Agents (ground-truth success)", "", f"See [{rel}]({rel}).", ""]
        if compare_report.is_file():  # its plots are next to it: point its image links there
            lines += [re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)", lambda m: f"![{m[1]}]({rel.parent.as_posix()}/{m[2]})",
                             compare_report.read_text())]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def guarantee_lines(run_dir: Path, models: list[dict]) -> list[str]:
    """Per reward model: how many goals hold a guaranteed threshold, and test precision pooled over their frames."""
    from vlmr.rl.experiments.scaling_rows import guarantee_record

    records = {m["name"]: guarantee_record(run_dir, m["name"], m["metrics"]["per_goal"]) for m in models}
    rows = [f"| {name} | {r['guaranteed']} of {r['fitted']} | {fmt(r['precision_own'])} | {fmt(r['precision_all'])} |"
            for name, r in records.items() if r]
    if not rows:
        return []
    return ["Goals whose threshold is guaranteed (target precision at the calibration's confidence, on val), and "
            "test precision pooled over those goals' frames (n/a: no guaranteed goal, or none fired):", "",
            "| reward model | guaranteed goals | precision over them, own-goal | over every frame |",
            "|---|---|---|---|", *rows, ""]


def group_lines(models: list[dict]) -> list[str]:
    """Seen and held-out goals (and each task family) side by side: own-goal AUROC, precision, recall per model."""
    groups = [g for g in dict.fromkeys(k for m in models for k in (m["metrics"].get("groups") or {}))]
    if not groups:
        return []
    lines = ["Goals seen in fine-tuning and goals held out of it (macro over each group's goals, own-goal view; "
             "held-out goals are scored as new goals: the calibration's fit for new goals, cross-fitted so that no "
             "goal's threshold saw its own frames, `calibrated: false`):", "",
             "| goals | n | " + " | ".join(f"{m['name']} AUROC / precision / recall" for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for group in groups:
        cells, count = [], None
        for m in models:
            rec = (m["metrics"].get("groups") or {}).get(group) or {}
            own = rec.get("own_goal") or {}
            count = rec.get("goals", count)
            cells.append(" / ".join(fmt(own.get(k)) for k in ("auroc", "precision", "recall")) if rec else "n/a")
        lines.append(f"| {group} | {count} | " + " | ".join(cells) + " |")
    return lines + [""]


def refine_lines(run_dir: Path) -> list[str]:
    """The on-policy rounds: rollout frames recorded, and each refined model's test metrics per dataset."""
    folders = [run_dir / refine_stages(1)[0]]
    while (run_dir / refine_stages(len(folders) + 1)[0]).is_dir():  # on-policy rounds 2, 3, ... (refine_rounds)
        folders.append(run_dir / refine_stages(len(folders) + 1)[0])
    summaries = [read_json(f / "summary.json", "refine summary") for f in folders if (f / "summary.json").is_file()]
    if not summaries:
        return []
    lines = ["", "## On-policy refinement", "",
             "The adapted model's agents were replayed with its reward; the frames where it fired and a sample of the "
             "others, labelled by the environment, joined the fine-tuning data (from the adapted adapter) and the "
             "calibration's fit split. Each later on-policy round does the same with the agents trained on the "
             "previous round's reward. Test metrics of each refined model, per dataset (pooled view: every "
             "frame and goal):", "",
             "| arm | round | rollout episodes | fired frames | dataset | test precision | recall | AUROC |",
             "|---|---|---|---|---|---|---|---|"]
    cal = {}
    for k, summary in enumerate(summaries, start=1):
        arm = refined_arm(k)
        for r in summary["rounds"]:
            cal = read_json(Path(r["calibration"]), "refined calibration")
            for d in cal["metrics"].get("datasets") or []:
                m = d["pooled"]
                lines.append(f"| {arm} | {r['round']} | {r['rollout_counts']['episodes']} | "
                             f"{r['rollout_counts']['fired']} | {d['name']} | {fmt(m.get('precision'))} | "
                             f"{fmt(m.get('recall'))} | {fmt(m.get('auroc'))} |")
    guarantee = cal.get("guarantee") or {}  # the last round's
    if guarantee.get("goals"):
        lines += ["", f"Goals with a guaranteed threshold in the last round's calibration: {guarantee['guaranteed']} "
                      f"of {guarantee['goals']}."]
    return lines + ["", "The agents trained on each refined reward are the `refined` (and `refined_k`) arms below.",
                    ""]
