"""Goal sentences: parsing, goal-set generation and caption paraphrases for BabyAI.

    parse_goal("go to the red ball")    # Goal(family='goto', color='red', type='ball')
    goal_sentence("pickup", "blue", "key")   # 'pick up the blue key'
    family_goals("goto")                # the 18 'go to the {color} {ball|box|key}' goals
    state_captions(front=("red", "ball"), carrying=None)   # paraphrases of what the agent sees
    goal_prompt_rules({"goto": ["a {color} {type} in front of you"]})   # the rule, as reward_model.json stores it

Families (truth is decided by `vlmr.rl.envs.babyai.label_goals` from the env state):
  goto    "go to the {color} {type}"   the agent faces that object in the adjacent cell
  pickup  "pick up the {color} {type}" the agent carries it
  open    "open the {color} door"      a door of that colour is open
Parsing is cached, so the PPO reward path can call it per step.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from vlmr.core.errors import VlmrError

COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECT_TYPES = ("ball", "box", "key")
ALL_TYPES = (*OBJECT_TYPES, "door")
FAMILIES = {
    "goto": "go to the {color} {type}",
    "pickup": "pick up the {color} {type}",
    "open": "open the {color} door",
}
_VERBS = {"go to": "goto", "pick up": "pickup", "open": "open"}
_ARTICLES = ("the", "a", "an")
_FAMILY_TYPES = {"goto": ALL_TYPES, "pickup": OBJECT_TYPES, "open": ("door",)}  # what parse_goal accepts
_PATTERN = re.compile(
    r"^(go to|pick up|open)\s+(?:the|a|an)\s+(?:(" + "|".join(COLORS) + r")\s+)?(" + "|".join(ALL_TYPES) + r")$")


class Goal(NamedTuple):
    family: str  # goto | pickup | open
    color: str | None  # None: any colour ("go to a ball")
    type: str  # ball | box | key | door


@functools.lru_cache(maxsize=4096)
def parse_goal(sentence: str) -> Goal:
    """'go to the red ball' -> Goal('goto', 'red', 'ball'); a clear error for anything else."""
    m = _PATTERN.match(" ".join(sentence.strip().lower().rstrip(".").split()))
    if not m:
        raise VlmrError(f"cannot parse goal {sentence!r}: BabyAI goals are "
                        f"{', '.join(repr(f) for f in FAMILIES.values())} with colours {', '.join(COLORS)} "
                        f"and types {', '.join(ALL_TYPES)}")
    family = _VERBS[m.group(1)]
    if family == "open" and m.group(3) != "door":
        raise VlmrError(f"cannot parse goal {sentence!r}: only doors can be opened ('open the red door')")
    if family == "pickup" and m.group(3) == "door":
        raise VlmrError(f"cannot parse goal {sentence!r}: doors cannot be picked up")
    return Goal(family, m.group(2), m.group(3))


def try_parse_goal(sentence: str | None) -> Goal | None:
    if not sentence:
        return None
    try:
        return parse_goal(sentence)
    except VlmrError:
        return None


def goal_slots(sentence: str) -> dict[str, str] | None:
    """{"color", "type"} of a goal with a colour, else None: the slots of goal templates and paraphrases."""
    goal = try_parse_goal(sentence)
    return {"color": goal.color, "type": goal.type} if goal is not None and goal.color else None


def goal_sentence(family: str, color: str, type_: str = "door") -> str:
    if family not in FAMILIES:
        raise VlmrError(f"unknown goal family {family!r}; families are {', '.join(FAMILIES)}")
    return FAMILIES[family].format(color=color, type=type_)


def family_goals(family: str, types: tuple[str, ...] | None = None, colors: tuple[str, ...] = COLORS) -> list[str]:
    """Every goal of a family: colours x types (doors only for 'open')."""
    if family not in FAMILIES:
        raise VlmrError(f"unknown goal family {family!r}; families are {', '.join(FAMILIES)}")
    if family == "open":
        types = ("door",)
    types = types or OBJECT_TYPES
    return [goal_sentence(family, c, t) for t in types for c in colors]


# Paraphrases of facts about the egocentric frame. The first of each list is the canonical one.
_FRONT = ("the agent is next to the {c} {t}", "a {c} {t} right in front of the agent",
          "the agent faces the {c} {t}", "a {c} {t} right in front of you, at the bottom centre",
          "the {c} {t} is directly ahead of the agent")
_CARRY = ("the agent carries the {c} {t}", "the agent is holding a {c} {t}",
          "a {c} {t} in the agent's hands, at the bottom centre")
_OPEN = ("the {c} door is open", "an open {c} door", "the agent has opened the {c} door")
_VISIBLE = ("a {c} {t} in view", "there is a {c} {t} ahead", "the agent can see a {c} {t}")
_NOTHING = ("nothing right in front of the agent", "the agent faces an empty floor",
            "no object in front of the agent")
_WALL = ("the agent faces a wall", "a grey wall right in front of the agent", "the agent is at a wall")


# one attribute at a time: with them the text tower can compose a colour-object pair no training text names
_FRONT_ATTRIBUTE = ("something {c} right in front of the agent", "a {t} right in front of the agent")
_CARRY_ATTRIBUTE = ("the agent is holding something {c}", "the agent is holding a {t}")


def attribute_captions(front: tuple[str, str] | None, carrying: tuple[str, str] | None = None) -> list[str]:
    """Captions that name the faced or carried object's colour alone and its type alone."""
    out = []
    for obj, templates in ((front, _FRONT_ATTRIBUTE), (carrying, _CARRY_ATTRIBUTE)):
        if obj is not None and obj[1] != "door":
            out += [s.format(c=obj[0], t=obj[1]) for s in templates]
    return out


def state_captions(front: tuple[str, str] | None, carrying: tuple[str, str] | None = None,
                   open_doors: tuple[str, ...] = (), visible: tuple[tuple[str, str], ...] = (),
                   front_wall: bool = False, rng=None) -> list[str]:
    """Natural sentences about what is true in the frame, canonical first, then shuffled paraphrases.

    front/carrying: (color, type) of the faced object / carried object; visible: other objects in view.
    """
    groups: list[list[str]] = []
    if front is not None:
        if front[1] == "door" and front[0] in open_doors:
            groups.append([s.format(c=front[0], t="open door") for s in _FRONT])
        else:
            groups.append([s.format(c=front[0], t=front[1]) for s in _FRONT])
    if carrying is not None:
        groups.append([s.format(c=carrying[0], t=carrying[1]) for s in _CARRY])
    for color in open_doors:
        groups.append([s.format(c=color) for s in _OPEN])
    if front is None and carrying is None and not open_doors:
        groups.append(list(_WALL if front_wall else _NOTHING))
    for color, type_ in visible[:2]:
        groups.append([s.format(c=color, t=type_) for s in _VISIBLE])
    first = groups[0][0]
    rest = [s for g in groups for s in g if s != first]
    if rng is not None:
        rng.shuffle(rest)
    return [first, *rest]


def goal_prompts(goals: list[str], family_templates: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per-goal caption prompts from per-family templates with {color} and {type}.

    {"goto": ["a {color} {type} right in front of you"]} turns "go to the red ball" into
    ["a red ball right in front of you"]. Goals of other families (or of other domains) keep
    the reward model's own templates.
    """
    unknown = sorted(set(family_templates) - set(FAMILIES))
    if unknown:
        raise VlmrError(f"goal templates name unknown families {unknown}; families are {', '.join(FAMILIES)}")
    prompts = {}
    for sentence in goals:
        goal = try_parse_goal(sentence)
        if goal is not None and goal.color and family_templates.get(goal.family):
            prompts[sentence] = [t.format(color=goal.color, type=goal.type) for t in family_templates[goal.family]]
    return prompts


def goal_prompt_rules(family_templates: dict[str, list[str]]) -> dict[str, dict]:
    """The rule goal_prompts applies, as data (vlmr.finetune.goal_rules.GoalTemplate fields per family).

    A reward model stores it (reward_model.json `goal_templates`), so a goal sentence outside its goal set
    gets the prompts goal_prompts would give it, without this module: the patterns and slot values are
    exactly what parse_goal accepts with a colour ("go to a ball" names none, so it gets no template).
    """
    unknown = sorted(set(family_templates) - set(FAMILIES))
    if unknown:
        raise VlmrError(f"goal templates name unknown families {unknown}; families are {', '.join(FAMILIES)}")
    verbs = {family: verb for verb, family in _VERBS.items()}
    return {family: {"goals": [f"{verbs[family]} {a} {{color}} {{type}}" for a in _ARTICLES],
                     "slots": {"color": list(COLORS), "type": list(_FAMILY_TYPES[family])},
                     "prompts": list(templates)}
            for family, templates in family_templates.items() if templates}
