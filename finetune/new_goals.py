"""Goals outside a reward model's saved goal set: their prompts, their calibration values and the warnings.

    rm = RewardModel.load("runs/demo/reward_model", calibration="runs/demo/reward_model/calibration.json",
                          goals=["go to the purple box"])
    rm.new_goals        # ["go to the purple box"] (known goals listed in goals= are scored as before)
    rm.calibrated       # {goal: bool}: False for new goals, which get the calibration's pooled fit

The text tower embeds any sentence, so a new goal is scored like the saved ones with three differences
(docs/DESIGN.md, "Goals outside the saved goal set"):
- its softmax runs over the saved candidates plus itself (reward_math.mixed_goal_log_probs): the saved
  goals' probabilities stay exactly what their calibration was fitted on, and new goals never compete;
- its prompts come from the stored rule (reward_model.json `goal_templates`, vlmr.finetune.goal_rules)
  when the sentence parses under it, else from the model's own `templates`;
- its temperature and threshold are the calibration's pooled fit (`fit.shared`): one fit over every saved
  goal, which says nothing certain about a goal it never saw. So it is marked `calibrated: false`, a
  quality warning says so, and strict mode refuses it.

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


def pooled_fit(calibration: dict, path: str | Path | None) -> tuple[float, float]:
    """The calibration's pooled temperature and threshold (`fit.shared`), which every new goal gets."""
    shared = (calibration.get("fit") or {}).get("shared") or {}
    for key in ("temperature", "threshold"):
        problem = reward_parameter_problem(key, shared.get(key)) if key in shared else f"{key} is missing"
        if problem:
            raise VlmrError(f"calibration file {path}: its pooled fit (fit.shared) has no usable {key} ({problem}), "
                            "which goals outside the goal set need; refit it with `vlmr calibrate`")
    return float(shared["temperature"]), float(shared["threshold"])


def warn_uncalibrated(path, new: list[str], temperature: float, threshold: float, strict: bool) -> None:
    quality_issue(f"{len(new)} goal(s) outside the calibrated goal set of {path}: "
                  f"{', '.join(repr(g) for g in new[:5])}{' ...' if len(new) > 5 else ''} get its pooled fit "
                  f"(temperature {temperature:.4g}, threshold {threshold:.4g}), which says nothing certain about "
                  "goals it never saw; they are marked calibrated: false. Collect data labelled for them and "
                  "calibrate a model that has them in its goal set", strict, stacklevel=3)
