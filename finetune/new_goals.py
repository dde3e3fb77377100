"""Goals outside a reward model's saved goal set: their prompts, their calibration values and the warnings.

    rm = RewardModel.load("runs/demo/reward_model", calibration="runs/demo/reward_model/calibration.json",
                          goals=["go to the purple box"])
    rm.new_goals        # ["go to the purple box"] (known goals listed in goals= are scored as before)
    rm.calibrated       # {goal: bool}: False for new goals, which get the calibration's fit for new goals

The text tower embeds any sentence, so a new goal is scored like the saved ones with three differences
(docs/DESIGN.md, "Goals outside the saved goal set"):
- its softmax runs over the saved candidates plus itself (reward_math.mixed_goal_log_probs): the saved
  goals' probabilities stay exactly what their calibration was fitted on, and new goals never compete;
- its prompts come from the stored rule (reward_model.json `goal_templates`, vlmr.finetune.goal_rules)
  when the sentence parses under it, else from the model's own `templates`;
- its temperature and threshold come from the calibration: `fit.new_goal` when it has one (fitted on goals
  held out of fine-tuning, calibrate/new_goal_fit.py), else the pooled fit over the saved goals
  (`fit.shared`). Neither says anything certain about a goal it never saw. So it is marked
  `calibrated: false`, a quality warning says so, and strict mode refuses it.

Tests: `.venv/bin/python -m pytest tests/test_new_goals.py -q`
"""

from __future__ import annotations

from pathlib import Path

from vlmr.finetune.goal_rules import rule_prompts

from vlmr.core.calibration_file import reward_parameter_problem
from vlmr.core.errors import VlmrError
from vlmr.core.quality import quality_issue


def new_goal_prompts(spec, goal: str) -> list[str]:
    """The prompts of a goal outside the goal set: the stored rule's, when the goal parses under it."""
    return rule_prompts(spec.goal_templates, goal) or [t.format(goal=goal) for t in spec.templates]


def check_new_goals(spec, goals, known) -> list[str]:
    """The sentences of `goals` that are not in `known` (saved or already added), in order, once each."""
    if isinstance(goals, str):
        goals = [goals]
    new: list[str] = []
    for g in goals:
        if not isinstance(g, str) or not g.strip():
            raise VlmrError(f"goal {g!r} is empty or not a sentence; give each goal as a sentence "
                            "(`--goal \"go to the red ball\"`)")
        if g in known or g in new:
            continue
        if g in spec.negatives:
            raise VlmrError(f"goal {g!r} is one of this reward model's negative captions, which stand for frames "
                            "that show no goal; give another sentence")
        new.append(g)
    return new


def warn_prompt_rule(spec, path, new: list[str], strict: bool) -> None:
    """A model whose per-goal prompts came from a rule it did not store cannot prompt new goals the same way."""
    if spec.goal_prompts and not spec.goal_templates:
        quality_issue(f"{path or 'this reward model'} has per-goal prompts but no goal_templates (it was saved "
                      "before vlmr stored the rule that made them), so new goals "
                      f"{', '.join(repr(g) for g in new[:3])}{' ...' if len(new) > 3 else ''} get its plain "
                      f"templates {spec.templates}, unlike its saved goals; export it again with the pipeline's "
                      "goal_templates (finetune model.goal_templates) to prompt them alike", strict, stacklevel=3)


def goal_family(goal: str) -> str | None:
    """A goal's task family: the words before " the " ("go to", "pick up"); None for goals without it."""
    return goal.split(" the ")[0] if " the " in goal else None


def new_goal_fit(calibration: dict, path: str | Path | None, goal: str) -> tuple[float, float, str]:
    """(temperature, threshold, name of the fit) that goal `goal`, outside the goal set, gets from a calibration.

    `fit.new_goal` when the calibration has one (fitted on goals held out of fine-tuning; its `families`
    entry for the goal's task family when there is one; a held-out goal of that fit gets its cross-fit, the
    other half's, so no goal is scored by a fit on its own frames), else the pooled fit over the saved goals
    (`fit.shared`)."""
    fit = calibration.get("fit") or {}
    entry, name = fit.get("shared") or {}, "fit.shared"
    if fit.get("new_goal"):
        entry, name = fit["new_goal"], "fit.new_goal"
        family = goal_family(goal)
        if family in (entry.get("families") or {}):
            entry, name = entry["families"][family], f"fit.new_goal.families[{family!r}]"
        for i, part in enumerate(entry.get("cross_fit") or []):
            if goal in (part.get("goals") or []):
                entry, name = part, f"{name}.cross_fit[{i}]"
                break
    for key in ("temperature", "threshold"):
        problem = reward_parameter_problem(key, entry.get(key)) if key in entry else f"{key} is missing"
        if problem:
            what = "its pooled fit" if name == "fit.shared" else "its fit for new goals"
            raise VlmrError(f"calibration file {path}: {what} ({name}) has no usable {key} ({problem}), which goals outside "
                            "the goal set need; refit it with `vlmr calibrate`")
    return float(entry["temperature"]), float(entry["threshold"]), name


def warn_uncalibrated(path, new: list[str], fits: list[tuple[float, float, str]], strict: bool) -> None:
    names = sorted({"fit.new_goal" if name.startswith("fit.new_goal") else "fit.shared" for _, _, name in fits})
    what = {"fit.shared": "the pooled fit of its saved goals (fit.shared)",
            "fit.new_goal": "its fit on goals held out of fine-tuning (fit.new_goal)"}
    shown = ", ".join(f"{g!r} (temperature {t:.4g}, threshold {b:.4g})" for g, (t, b, _) in zip(new[:5], fits))
    quality_issue(f"{len(new)} goal(s) outside the calibrated goal set of {path} get "
                  f"{' and '.join(what[n] for n in names)}: {shown}{' ...' if len(new) > 5 else ''}. That fit says "
                  "nothing certain about a goal it never saw, so they are marked calibrated: false. Collect data "
                  "labelled for them and calibrate a model that has them in its goal set", strict, stacklevel=3)
