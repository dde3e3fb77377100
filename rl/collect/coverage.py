"""Positives for every goal in every split: top-up shards of episodes aimed at under-covered goals.

    vlmr collect configs/data/crafter.yaml min_positives_per_split=60

Calibration fits a threshold per goal on val and can only guarantee its precision with enough
predicted positives (calibrate/guarantee.py: 45 at target 0.95 and confidence 0.9), and a goal with
no positives in test has no measured quality at all. So after the planned shards, collect counts each
goal's positive frames per split (the shards' progress records hold the counts). A goal below
`min_positives_per_split` gets top-up shards in that split:

- their episodes are aimed at the short goals (`focus`): a source that can aim does (BabyAI skips
  episodes whose mission is not among them; Crafter's scripted policy favours them), and of every
  source only episodes with a positive frame of a short goal are kept (stratified episodes);
- they continue the split's shard numbering, so their env seeds stay disjoint from every other
  shard's and split's, and each one's content depends only on the config and the shards before it:
  a resumed collection rewrites the same top-ups;
- rounds repeat until every goal is covered or the split's top-up budget (`max_topup_ratio` times its
  planned frames) is spent.

A goal still short after that is dropped from the dataset's goal set with a one-line note in the
manifest (`dropped_goals`), or stops the collection under strict.
"""

from __future__ import annotations

import math

# a top-up shard renders at most this many times its frame budget before it gives up on the focus goals
RENDER_BUDGET = 20


def positive_counts(records: list[dict]) -> dict[str, int]:
    """Positive frames per goal over the shards of one split (their progress records)."""
    counts: dict[str, int] = {}
    for rec in records:
        for goal, n in rec.get("positives", {}).items():
            counts[goal] = counts.get(goal, 0) + n
    return counts


def short_goals(records: list[dict], goals: list[str], minimum: int) -> list[str]:
    counts = positive_counts(records)
    return [g for g in goals if counts.get(g, 0) < minimum]


def split_goals(split: str, goals: list[str], holdout: list[str]) -> list[str]:
    """The goals a split must cover: held-out goals are kept out of train on purpose."""
    return [g for g in goals if g not in holdout] if split == "train" else goals


def split_minimum(minimum: int | dict[str, int], split: str) -> int:
    """min_positives_per_split of one split (one number for every split, or {split: number}; absent: 0)."""
    return minimum.get(split, 0) if isinstance(minimum, dict) else minimum


def topup_tasks(cfg, done: dict, planned: dict[str, int], goals: list[str], holdout: list[str] = ()) -> list[tuple]:
    """The next round of top-up shards: (split, index, frames, focus goals) for each split still short."""
    tasks = []
    for split, count in planned.items():
        frames = getattr(cfg.frames, split)
        minimum = split_minimum(cfg.min_positives_per_split, split)
        if frames <= 0 or minimum <= 0:
            continue
        records = [rec for (s, _), rec in sorted(done.items()) if s == split]
        short = short_goals(records, split_goals(split, goals, holdout), minimum)
        extra = sum(rec["samples"] for (s, i), rec in done.items() if s == split and i >= count)
        budget = math.ceil(cfg.max_topup_ratio * frames) - extra
        # a round that added nothing for its focus goals will not do better with the same focus
        last = max((i for (s, i) in done if s == split), default=-1)
        stalled = last >= count and not _helped(done[(split, last)])
        if short and budget > 0 and not stalled:
            tasks.append((split, last + 1, min(cfg.shard_size, budget), tuple(short)))
    return tasks


def _helped(rec: dict) -> bool:
    focus = rec.get("focus") or []
    return any(rec.get("positives", {}).get(g, 0) > 0 for g in focus)


def coverage_notes(done: dict, planned: dict[str, int], goals: list[str], minimum: int | dict[str, int], frames,
                   holdout: list[str] = ()) -> dict[str, str]:
    """Goal -> why it is dropped: the splits where it stayed below the minimum after every top-up."""
    notes: dict[str, list[str]] = {}
    for split in planned:
        need = split_minimum(minimum, split)
        if getattr(frames, split) <= 0 or need <= 0:
            continue
        counts = positive_counts([rec for (s, _), rec in done.items() if s == split])
        for g in split_goals(split, goals, holdout):
            if counts.get(g, 0) < need:
                notes.setdefault(g, []).append(f"{split} {counts.get(g, 0)} < {need}")
    return {g: f"positive frames {', '.join(parts)} (min_positives_per_split) after top-ups"
            for g, parts in notes.items()}
