"""Goals held out of training: which ones, and keeping every word of them out of the train split.

    vlmr collect configs/data/babyai_goto.yaml holdout_goals=one_in_three_pairs
    vlmr collect configs/data/babyai_goto.yaml 'holdout_goals=["go to the red ball", "go to the blue key"]'

A held-out goal measures generalisation to a goal never trained on, so no training text may name
its colour-object pair:

- train episodes whose mission is held out are skipped;
- train frames where a held-out goal holds (the agent faces or carries its object by chance) are
  dropped: kept, they would teach the goal loss that the held-out goal's positives are no goal at all;
- train captions that name a held-out pair ("a red ball in view") are dropped; a frame left without a
  caption gets NEUTRAL_CAPTION, so frames where such an object merely appears stay in train;
- val and test keep everything, and label every goal, held out or not.

Fine-tuning then trains on the seen goals only (the manifest's `holdout_goals` leave its goal set),
and calibration fits only those; a held-out goal is scored like any new goal added at load time.

The rule `one_in_three_pairs` holds out the colour x object pairs whose (colour index + object
index) is divisible by 3: one in three pairs, every colour held out for exactly one object, and every
colour and every object still seen in training.
"""

from __future__ import annotations

from vlmr.core.errors import VlmrError

NEUTRAL_CAPTION = "the agent's view of the room"
RULES = ("one_in_three_pairs",)


def _pair(goal: str):
    from vlmr.rl.envs.babyai_goals import try_parse_goal

    parsed = try_parse_goal(goal)
    return None if parsed is None or parsed.color is None else (parsed.color, parsed.type)


def resolve_holdout(spec: str | list[str] | None, goals: list[str]) -> list[str]:
    """The held-out goal sentences for a rule name or a list; one-line errors for what cannot be held out."""
    if not spec:
        return []
    if isinstance(spec, str):
        if spec not in RULES:
            raise VlmrError(f"holdout_goals={spec!r} is not a rule ({', '.join(RULES)}); give a rule or a list of "
                            "goal sentences")
        from vlmr.rl.envs.babyai_goals import COLORS, OBJECT_TYPES

        pairs = {g: p for g in goals if (p := _pair(g))}
        if not pairs:
            raise VlmrError(f"holdout rule {spec!r} needs colour-object goals (BabyAI); this goal set has none: "
                            "give holdout_goals as a list of sentences")
        # a held-out pair is held out in every family that names it ("go to" and "pick up the red ball")
        held = [g for g, (c, t) in pairs.items()
                if c in COLORS and t in OBJECT_TYPES and (COLORS.index(c) + OBJECT_TYPES.index(t)) % 3 == 0]
    else:
        unknown = [g for g in spec if g not in goals]
        if unknown:
            raise VlmrError(f"holdout_goals {unknown[:3]} are not in the goal set ({len(goals)} goals, e.g. "
                            f"{goals[:2]}); hold out goals of the set")
        held = list(spec)
    seen = [g for g in goals if g not in held]
    if not seen:
        raise VlmrError("holdout_goals holds out every goal: nothing would be left to train on")
    for kind, k in (("colour", 0), ("object", 1)):
        words = {p[k] for g in goals if (p := _pair(g))}
        unseen = sorted(words - {p[k] for g in seen if (p := _pair(g))})
        if unseen:
            raise VlmrError(f"holdout_goals leaves the {kind}(s) {unseen} unseen in training; hold out fewer goals "
                            "so that every colour and object is still trained on")
    return held


def held_pairs(held: list[str]) -> set[str]:
    """The 'colour object' phrases a train caption must not contain."""
    return {f"{p[0]} {p[1]}" for g in held if (p := _pair(g))}


def clean_captions(captions: list[str], phrases: set[str]) -> list[str]:
    kept = [c for c in captions if not any(p in c for p in phrases)]
    return kept or [NEUTRAL_CAPTION]
