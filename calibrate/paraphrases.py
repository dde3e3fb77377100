"""Reworded missions in `vlmr evaluate`: how much of a reward model's quality survives another wording.

    vlmr evaluate --model runs/demo/adapted --calibration auto --data data/babyai_goto \\
                  --paraphrase "stand right in front of the {color} {type}" --paraphrase "face the {color} {type}"

Each template rewords every goal that parses into a colour and a type (BabyAI's parser, which
vlmr.rl.collect.rerender.evaluate passes in): "go to the red ball" becomes "stand right in front of the
red ball". The model then scores the frames with the reworded sentences as its goal captions: the
candidate set is the reworded goals (a goal that does not parse keeps its sentence) and the negatives,
so no goal's original wording takes part. The reworded sentences are prompted as goals added at load
are (vlmr.finetune.new_goals). Every goal keeps its own temperature, so only the captions differ
between wordings, and AUROC needs no threshold. Each model's results gain `wordings`: AUROC own-goal and
pooled, macro over the goals that parse, for the original wording and for each template.

Tests: `.venv/bin/python -m pytest tests/test_evaluate.py -q -k paraphrase`
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from vlmr.calibrate.metrics import evaluate_scores
from vlmr.finetune.goal_rules import placeholders

from vlmr.core.errors import VlmrError
from vlmr.core.metrics import macro_average
from vlmr.core.quality import QualityWarning
from vlmr.core.reporting import fmt

SLOTS = ("color", "type")
GoalSlots = Callable[[str], "dict[str, str] | None"]  # a goal sentence -> {"color", "type"}, or None


def check_paraphrase(template: str) -> None:
    """A one-line error for a template that does not name {color} and {type} once each."""
    try:
        names = placeholders(template)
    except ValueError as e:
        raise VlmrError(f"paraphrases: {template!r} is not a template ({e}); write it like "
                        "'stand right in front of the {color} {type}'") from None
    if sorted(names) != sorted(SLOTS):
        raise VlmrError(f"paraphrases: {template!r} must name {{color}} and {{type}} once each and no other slot "
                        f"(it names {names or 'none'}); write it like 'stand right in front of the {{color}} {{type}}'")


def reword(goals: list[str], negatives: list[str], template: str, goal_slots: GoalSlots, model: str) -> dict[str, str]:
    """{goal: reworded sentence} for every goal that parses; refused when a wording would merge two captions."""
    reworded = {g: template.format(**slots) for g in goals if (slots := goal_slots(g))}
    if not reworded:
        raise VlmrError(f"paraphrase {template!r}: none of the {len(goals)} goals of {model} parses into a colour and "
                        "a type ('go to the red ball'), so there is nothing to reword")
    seen: dict[str, str] = {}
    for goal, sentence in reworded.items():
        if sentence in seen:
            raise VlmrError(f"paraphrase {template!r} words {seen[sentence]!r} and {goal!r} alike ({sentence!r}); "
                            "use a template that keeps them apart (one per goal family, evaluated separately)")
        if sentence != goal and (sentence in goals or sentence in negatives):
            raise VlmrError(f"paraphrase {template!r} turns {goal!r} into {sentence!r}, another of {model}'s "
                            "captions; use a template that words it differently")
        seen[sentence] = goal
    return reworded


def add_wordings(rm, wordings: dict[str, dict[str, str]]) -> None:
    """Give the model the reworded sentences as goals added at load, so one pass over the frames scores them all.

    Their pooled calibration is not used (each goal keeps its own temperature here), so the warning about it
    does not apply."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        rm.add_goals([s for reworded in wordings.values() for s in reworded.values()], strict=False)


def _aurocs(metrics: dict, subset: list[str]) -> dict:
    own = macro_average([metrics["per_goal"][g]["own"] for g in subset], ("auroc",))
    pooled = macro_average([metrics["per_goal"][g]["all"] for g in subset], ("auroc",))
    return {"auroc_own_goal": own["auroc"], "auroc_pooled": pooled["auroc"],
            "terms": {"own_goal": own["goals"]["auroc"], "pooled": pooled["goals"]["auroc"]}}


def wording_results(rm, scores, wordings: dict[str, dict[str, str]], metrics: dict, temperatures, thresholds,
                    ece_bins: int) -> list[dict]:
    """AUROC per wording, the original first, each macro over the goals that parse (the same for every template)."""
    goals = list(rm.spec.goals)
    num_goals, saved = len(goals), len(goals) + len(rm.spec.negatives)
    subset = [g for g in goals if g in next(iter(wordings.values()))]
    out = [{"wording": "original", "template": None, "goals": len(subset), **_aurocs(metrics, subset)}]
    for template, reworded in wordings.items():
        cols = []
        for goal in goals:
            k = rm.goal_to_index[reworded.get(goal, goal)]  # the goal itself when it does not parse
            cols.append(k if k < num_goals else saved + k - num_goals)
        cols += list(range(num_goals, saved))  # the negatives
        m = evaluate_scores(scores.sims[:, cols], scores.labels, scores.own_goal, temperatures, thresholds, goals,
                            ece_bins)
        out.append({"wording": template, "template": template, "goals": len(subset), **_aurocs(m, subset),
                    "reworded": reworded})
    return out


def wording_table(models: list[dict]) -> str:
    """Markdown: one row per wording, one column per model, AUROC own-goal / pooled."""
    rows = models[0]["wordings"]
    lines = [f"AUROC by mission wording (own-goal / pooled, macro over the {rows[0]['goals']} goals that parse)", "",
             "| wording | " + " | ".join(m["name"] for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for i, row in enumerate(rows):
        cells = [f"{fmt(m['wordings'][i]['auroc_own_goal'])} / {fmt(m['wordings'][i]['auroc_pooled'])}" for m in models]
        lines.append(f"| {row['wording'].replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
