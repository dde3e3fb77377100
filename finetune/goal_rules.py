"""Prompt rules: how a goal sentence becomes its caption prompts, stored with the reward model.

    rules = {"goto": GoalTemplate(goals=["go to the {color} {type}"],
                                  slots={"color": ["red", "blue"], "type": ["ball", "key"]},
                                  prompts=["a {color} {type} right in front of you"])}
    parse_with_rules(rules, "Go to the red ball.")   # ("goto", {"color": "red", "type": "ball"})
    rule_prompts(rules, "go to the red ball")        # ["a red ball right in front of you"]

reward_model.json keeps them under `goal_templates` (docs/DESIGN.md, "Goals outside the saved goal set"),
so a goal added at load gets its prompts the way the trained goals got theirs, without importing the
environments that wrote the rule (`vlmr.rl.envs.babyai_goals.goal_prompt_rules` writes BabyAI's).

A sentence matches a family when, lower-cased, with a trailing full stop dropped and runs of spaces made
one (how BabyAI parses missions), it is one of the family's goal patterns with every slot filled by one of
that slot's values. The first family that matches, in stored order, gives the prompts.

Tests: `.venv/bin/python -m pytest tests/test_new_goals.py -q`
"""

from __future__ import annotations

import re
import string

from vlmr.core.config import config_dataclass


def placeholders(template: str) -> list[str]:
    """The {slot} names of a template, in order ("a {color} {type}" -> ["color", "type"])."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def normalize_sentence(sentence: str) -> str:
    """The form goal sentences are matched in: lower case, no trailing full stop, single spaces."""
    return " ".join(sentence.strip().lower().rstrip(".").split())


@config_dataclass
class GoalTemplate:
    """One goal family's rule: the sentences of its goals, and the prompts each of them gets."""

    goals: list[str]  # the family's goal-sentence patterns, slots in braces ("go to the {color} {type}")
    slots: dict[str, list[str]]  # the values each slot may take ({"color": ["red", ...], "type": ["ball", ...]})
    prompts: list[str]  # the family's prompt templates, filled with a goal's slot values; ensembled

    def __post_init__(self):
        if not self.goals or not self.prompts:
            raise ValueError("a goal template needs at least one goal pattern and one prompt")
        empty = sorted(k for k, v in self.slots.items() if not v or any(not str(x).strip() for x in v))
        if empty:
            raise ValueError(f"goal template slots {empty} have no values or an empty value")
        for pattern in self.goals:
            names = placeholders(pattern)
            if not names or len(names) != len(set(names)) or set(names) - set(self.slots):
                raise ValueError(f"goal pattern {pattern!r} must name each of its slots once, all of them among "
                                 f"the slots {sorted(self.slots)}")
        for prompt in self.prompts:
            missing = [n for n in placeholders(prompt) if any(n not in placeholders(p) for p in self.goals)]
            if missing:
                raise ValueError(f"prompt {prompt!r} uses slots {missing} that not every goal pattern "
                                 f"({self.goals}) fills")

    def match(self, sentence: str) -> dict[str, str] | None:
        """The slot values of a sentence (already normalised) that one of the patterns gives, else None."""
        for pattern in self.goals:
            parts = []
            for literal, name, _, _ in string.Formatter().parse(normalize_sentence(pattern)):
                parts.append(re.escape(literal))
                if name is not None:
                    values = sorted({normalize_sentence(v) for v in self.slots[name]}, key=len, reverse=True)
                    parts.append(f"(?P<{name}>{'|'.join(re.escape(v) for v in values)})")
            m = re.fullmatch("".join(parts), sentence)
            if m:
                return m.groupdict()
        return None


def parse_with_rules(rules: dict[str, GoalTemplate], sentence: str) -> tuple[str, dict[str, str]] | None:
    """(family, slot values) of the first family whose patterns match the sentence, or None."""
    text = normalize_sentence(sentence)
    for family, rule in rules.items():
        slots = rule.match(text)
        if slots is not None:
            return family, slots
    return None


def rule_prompts(rules: dict[str, GoalTemplate], sentence: str) -> list[str] | None:
    """The prompts the rules give a goal sentence, or None when no family's patterns match it."""
    parsed = parse_with_rules(rules, sentence)
    if parsed is None:
        return None
    family, slots = parsed
    return [p.format(**slots) for p in rules[family].prompts]
