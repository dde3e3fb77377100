"""Held-out goals: no training text names them; val and test keep everything (rl/collect/holdout.py)."""

from __future__ import annotations

import pytest
from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect
from vlmr.rl.collect.holdout import held_pairs, resolve_holdout
from vlmr.rl.envs.babyai import goal_set

from vlmr.core.dataset import iter_split, read_manifest
from vlmr.core.errors import VlmrError

GOTO = goal_set("BabyAI-GoToLocal-v0")


def test_the_rule_holds_out_one_in_three_pairs_and_keeps_every_word_seen():
    held = resolve_holdout("one_in_three_pairs", GOTO)
    assert len(held) == len(GOTO) // 3
    seen = [g for g in GOTO if g not in held]
    for word in ("red", "green", "blue", "purple", "yellow", "grey", "ball", "box", "key"):
        assert any(word in g for g in seen), word


def test_the_rule_holds_a_pair_out_in_every_family_that_names_it():
    both = GOTO + goal_set("BabyAI-PickupLoc-v0")
    held = resolve_holdout("one_in_three_pairs", both)
    assert len(held) == 12 and "go to the red ball" in held and "pick up the red ball" in held
    assert held_pairs(held) == held_pairs([g for g in held if g.startswith("go to")])


@pytest.mark.parametrize("spec, message", [
    (["go to the red ball", "go to the red box", "go to the red key"], r"colour\(s\) \['red'\] unseen"),
    (["go to the pink ball"], "not in the goal set"),
    ("every_other", "is not a rule"),
    (GOTO, "every goal"),
])
def test_bad_holdouts_are_one_line_errors(spec, message):
    with pytest.raises(VlmrError, match=message):
        resolve_holdout(spec, GOTO)


def test_a_rule_needs_colour_object_goals():
    with pytest.raises(VlmrError, match="colour-object goals"):
        resolve_holdout("one_in_three_pairs", ["collect wood", "place a table"])


def test_held_out_goals_never_reach_train_text_and_stay_in_val_and_test(tmp_path):
    cfg = CollectConfig(name="h", source="babyai", env_id="BabyAI-GoToLocal-v0", out_dir=str(tmp_path / "d"),
                        frames=SplitFrames(train=300, val=200, test=200), shard_size=100,
                        holdout_goals="one_in_three_pairs")
    out = collect(cfg, progress=False)
    held = resolve_holdout("one_in_three_pairs", GOTO)
    assert read_manifest(out)["holdout_goals"] == held
    phrases = held_pairs(held)
    train = list(iter_split(out, "train"))
    assert not {s["meta"]["mission"] for s in train} & set(held)
    assert not any(p in c for s in train for c in s["meta"]["captions"] for p in phrases)
    # a frame where a held-out goal holds (its object faced by chance in a seen goal's episode) leaves train
    assert not any(s["meta"]["labels"][g] for s in train for g in held)
    val_missions = {s["meta"]["mission"] for s in iter_split(out, "val")}
    assert val_missions & set(held)
    assert any(p in c for s in iter_split(out, "val") for c in s["meta"]["captions"] for p in phrases)


def test_fine_tuning_trains_on_seen_goals_only(tmp_path):
    from vlmr.finetune.datamodule import ShardDataModule

    cfg = CollectConfig(name="h", source="babyai", env_id="BabyAI-GoToLocal-v0", out_dir=str(tmp_path / "d"),
                        frames=SplitFrames(train=200, val=100, test=100), shard_size=100,
                        holdout_goals=["go to the red ball", "go to the blue key"])
    out = collect(cfg, progress=False)
    dm = ShardDataModule(out, batch_size=50, shuffle_buffer=0)
    assert set(dm.goals) == set(GOTO) - {"go to the red ball", "go to the blue key"}
    for batch in dm.train_dataloader():  # no candidate, label column or caption of a held-out goal
        assert batch["labels"].shape[1] == len(dm.goals)
        assert not any("red ball" in c or "blue key" in c for c in batch["captions"])
    with pytest.raises(VlmrError, match="goal sets differ"):
        ShardDataModule(out, goals=GOTO[:3])


def test_attribute_captions_name_colour_and_type_alone_and_only_when_asked(tmp_path):
    from vlmr.rl.collect.collect import fingerprint

    def dataset(name, **kw):
        cfg = CollectConfig(name="h", source="babyai", env_id="BabyAI-GoToLocal-v0", out_dir=str(tmp_path / name),
                            frames=SplitFrames(train=200, val=50, test=50), shard_size=100,
                            holdout_goals="one_in_three_pairs", **kw)
        return cfg, [c for s in iter_split(collect(cfg, progress=False), "train") for c in s["meta"]["captions"]]

    plain_cfg, plain = dataset("plain")
    cfg, captions = dataset("attr", attribute_captions=True)
    assert fingerprint(cfg) != fingerprint(plain_cfg)
    attribute = [c for c in captions if c.startswith(("something ", "a ")) and c.endswith(" right in front of the agent")
                 and len(c.split()) == 8]
    assert attribute and not [c for c in plain if c.startswith("something ")]
    assert {c.split()[1] for c in attribute} & {"red", "green", "blue", "purple", "yellow", "grey"}
    assert {c.split()[1] for c in attribute} & {"ball", "box", "key"}
    phrases = held_pairs(resolve_holdout("one_in_three_pairs", GOTO))
    assert not any(p in c for c in captions for p in phrases)


def test_attribute_captions_need_colour_object_frames():
    with pytest.raises(VlmrError, match="attribute_captions=true is for source babyai"):
        collect(CollectConfig(name="s", source="shapes", attribute_captions=True), progress=False)
