"""The report of a `vlmr pipeline` chain, runs/<name>/report.md, from the stages' outputs.

    write_final_report(cfg, run_dir, runner.rows, calibration_reports, eval_json, compare_report, seconds)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from vlmr.core.files import atomic_write_text, read_json

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
    lines += ["", "## Reward quality (test split)", ""]
    lines += ["```", comparison_table(read_json(eval_json)["models"]), "```", ""]
    lines += [f"- calibration report, {arm}: [{p.relative_to(run_dir)}]({p.relative_to(run_dir)})"
              for arm, p in cal_reports.items()]
    if compare_report is not None:
        rel = compare_report.relative_to(run_dir)
        lines += ["", "## Agents (ground-truth success)", "", f"See [{rel}]({rel}).", ""]
        if compare_report.is_file():  # its plots are next to it: point its image links there
            lines += [re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)", lambda m: f"![{m[1]}]({rel.parent.as_posix()}/{m[2]})",
                             compare_report.read_text())]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
