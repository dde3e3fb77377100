"""Goals outside a reward model's saved goal set: scoring, calibration flags, prompt rules, strict mode, CLI."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from model_fixtures import GOALS, tiny_reward_model  # noqa: F401
from vlmr.finetune.goal_rules import GoalTemplate, rule_prompts
from vlmr.finetune.reward_model import RewardModel, make_spec
from vlmr.rl.envs.babyai_goals import COLORS, FAMILIES, family_goals, goal_prompt_rules, goal_prompts

from vlmr.core.calibration_file import write_calibration
from vlmr.core.errors import VlmrError
from vlmr.core.quality import QualityWarning, StrictModeError

NEW = ["go to the purple box", "pick up the yellow key"]
POOLED = {"temperature": 0.05, "threshold": 0.3}
TEMPLATES = {"goto": ["a {color} {type} right in front of you"], "open": ["an open {color} door", "the {color} {type}"]}


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


@pytest.fixture
def saved(tiny_reward_model, tmp_path):
    """The tiny model saved with a calibration: per-goal values for the saved goals and a pooled fit."""
    tiny_reward_model.save(tmp_path / "rm")
    entries = {g: {"temperature": 0.02 * (i + 1), "threshold": 0.1 * (i + 1)} for i, g in enumerate(GOALS)}
    write_calibration(tmp_path / "cal.json", tiny_reward_model.model_id, entries, fit={"shared": POOLED})
    return tmp_path / "rm", tmp_path / "cal.json"


def load(saved, goals=None, strict=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        return RewardModel.load(saved[0], calibration=saved[1], goals=goals, strict=strict)


def test_known_goals_are_unchanged_by_added_goals(saved):
    plain, extended = load(saved), load(saved, goals=[GOALS[1], *NEW])
    assert extended.goals == [*GOALS, *NEW] and extended.new_goals == NEW  # a saved goal in goals= stays known
    assert extended.model_id == plain.model_id  # the saved model's identity, which the calibration is tied to
    f, ids = frames(6), [0, 1, 2, 2, 1, 0]
    assert torch.equal(extended.probs(f, ids), plain.probs(f, ids))
    assert torch.equal(extended.reward(f, ids), plain.reward(f, ids))
    assert torch.equal(extended.all_probs(f)[:, :3], plain.all_probs(f))
    assert torch.equal(extended.similarities(f)[:, :4], plain.similarities(f))


def test_new_goals_get_the_pooled_fit_and_are_not_calibrated(saved):
    with pytest.warns(QualityWarning, match=r"2 goal\(s\) outside the calibrated goal set.*pooled fit.*'go to the purple box'.*"
                                            "calibrated: false"):
        rm = RewardModel.load(saved[0], calibration=saved[1], goals=NEW)
    assert rm.calibrated == {**{g: True for g in GOALS}, **{g: False for g in NEW}}
    assert torch.allclose(rm.temperatures, torch.tensor([0.02, 0.04, 0.06, 0.05, 0.05]))
    assert torch.allclose(rm.thresholds, torch.tensor([0.1, 0.2, 0.3, 0.3, 0.3]))
    assert not any(RewardModel.load(saved[0]).calibrated.values())  # without a calibration nothing is calibrated
    # added before the calibration is loaded: the same values and the same warning
    late = RewardModel.load(saved[0], goals=NEW)
    with pytest.warns(QualityWarning, match="outside the calibrated goal set"):
        late.load_calibration(saved[1])
    assert torch.equal(late.temperatures, rm.temperatures) and late.calibrated == rm.calibrated


def test_a_new_goal_competes_with_the_saved_candidates_and_itself_only(saved):
    rm = load(saved, goals=NEW)
    f = frames(4, seed=1)
    sims = rm.similarities(f)  # saved goals, the negative, then the new goals
    assert sims.shape == (4, 3 + 1 + 2)
    for k, goal in enumerate(NEW):
        logits = torch.cat([sims[:, :4], sims[:, 4 + k:5 + k]], dim=1) / POOLED["temperature"]
        assert torch.allclose(rm.probs(f, [goal] * 4), logits.softmax(-1)[:, -1], atol=1e-6)
    alone = load(saved, goals=NEW[:1])  # another new goal does not change it
    assert torch.allclose(alone.probs(f, [NEW[0]] * 4), rm.probs(f, [NEW[0]] * 4), atol=1e-7)


def test_batched_scoring_equals_per_frame_for_mixed_goals(saved):
    rm = load(saved, goals=NEW)
    f, ids = frames(7, seed=2), [3, 0, 4, 2, 3, 1, 4]
    batched = rm.probs(f, ids)
    single = torch.cat([rm.probs(f[i:i + 1], ids[i:i + 1]) for i in range(7)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(rm.all_probs(f)[torch.arange(7), torch.tensor(ids)], batched, atol=1e-6)
    assert torch.equal(rm.reward(f, ids), (batched >= rm.thresholds[torch.tensor(ids)]).float())
    rewards = torch.cat([rm.reward(f[i:i + 1], ids[i:i + 1]) for i in range(7)])
    assert torch.equal(rm.reward(f, ids), rewards)
    assert torch.equal(rm.probs(f, [rm.goals[i] for i in ids]), batched)  # sentences and ids alike
    rm.spec.reward_mode = "goal_baseline"  # the goal's own embedding, the saved model's baseline
    try:
        cosine_free = rm.reward(f, ids)
        assert torch.allclose(cosine_free, torch.cat([rm.reward(f[i:i + 1], ids[i:i + 1]) for i in range(7)]),
                              atol=1e-5)
    finally:
        rm.spec.reward_mode = "binary"


def test_strict_refuses_new_goals_with_one_line(saved):
    with pytest.raises(StrictModeError, match="outside the calibrated goal set") as err:
        RewardModel.load(saved[0], calibration=saved[1], goals=NEW, strict=True)
    assert "\n" not in str(err.value)
    load(saved, goals=GOALS[:2], strict=True)  # saved goals only: nothing to refuse


def test_empty_or_negative_goal_sentences_are_refused(saved):
    with pytest.raises(VlmrError, match="empty"):
        load(saved, goals=["go to the red ball", "  "])
    with pytest.raises(VlmrError, match="negative captions"):
        load(saved, goals=["an empty room"])
    with pytest.raises(VlmrError, match="is empty"):
        RewardModel.create("vlmr-tiny", ["go to the red ball", "  "])


def test_a_calibration_without_a_pooled_fit_cannot_serve_new_goals(saved, tmp_path):
    rm = RewardModel.load(saved[0])
    write_calibration(tmp_path / "old.json", rm.model_id, {g: {"temperature": 0.1, "threshold": 0.5} for g in GOALS})
    with pytest.raises(VlmrError, match=r"pooled fit \(fit.shared\).*vlmr calibrate"):
        RewardModel.load(saved[0], calibration=tmp_path / "old.json", goals=NEW)


def test_the_babyai_rule_gives_the_prompts_goal_prompts_gives():
    rules = {f: GoalTemplate(**r) for f, r in goal_prompt_rules({f: [f"{f}: {{color}} {{type}}"] for f in FAMILIES}).items()}
    sentences = [g for f in FAMILIES for g in family_goals(f, types=("ball", "box", "key", "door"))]
    sentences += ["Go to a RED ball.", "go  to an  blue key", "go to a ball", "open the red box", "pick up the red door",
                  "walk to the red ball"]
    expected = goal_prompts(sentences, {f: [f"{f}: {{color}} {{type}}"] for f in FAMILIES})
    assert len(expected) == len(COLORS) * (4 + 3 + 1) + 2  # every family goal, and the two variants
    for s in sentences:
        assert rule_prompts(rules, s) == expected.get(s), s


def test_the_prompt_rule_round_trips_and_prompts_new_goals_like_saved_ones(tmp_path):
    goals = family_goals("goto", types=("ball",))
    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", goals, goal_prompts=goal_prompts(goals, TEMPLATES),
                            goal_templates=goal_prompt_rules(TEMPLATES), negatives=["an empty room"])
    rm.save(tmp_path / "rm")
    stored = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert stored["version"] == 2 and stored["goal_templates"]["goto"]["prompts"] == TEMPLATES["goto"]
    loaded = RewardModel.load(tmp_path / "rm", goals=["go to the red box", "open the red door", "dance"])
    assert loaded.model_id == rm.model_id
    spec = loaded.spec
    assert rule_prompts(spec.goal_templates, "go to the red ball") == spec.goal_prompts["go to the red ball"] \
        == ["a red ball right in front of you"]
    # a new goal's embedding is the one it would have had in the saved goal set
    torch.manual_seed(0)
    wider = RewardModel.create("vlmr-tiny", [*goals, "go to the red box", "open the red door", "dance"],
                               negatives=["an empty room"],
                               goal_prompts=goal_prompts([*goals, "go to the red box", "open the red door"], TEMPLATES))
    assert torch.allclose(loaded.new_goal_embeddings(), wider.text_embeddings()[len(goals):len(goals) + 3], atol=1e-6)
    assert torch.allclose(loaded.goal_embeddings()[:len(goals)], loaded.text_embeddings()[:len(goals)])


def test_a_rule_must_reproduce_the_saved_per_goal_prompts():
    goals = ["go to the red ball", "go to the blue key"]
    with pytest.raises(VlmrError, match="store the rule that made the per-goal prompts"):
        make_spec(arch="vlmr-tiny", goals=goals, goal_templates=goal_prompt_rules(TEMPLATES))
    with pytest.raises(VlmrError, match="goal pattern"):
        make_spec(arch="vlmr-tiny", goals=goals, goal_templates={"x": {"goals": ["go"], "slots": {}, "prompts": ["p"]}})


def test_old_files_load_as_before_and_new_files_are_refused_by_version(tiny_reward_model, tmp_path):
    tiny_reward_model.save(tmp_path / "rm")
    raw = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert raw["version"] == 1 and "goal_templates" not in raw  # no rule: the file older vlmr wrote and reads
    raw["goal_prompts"] = {GOALS[0]: ["a red ball ahead"]}  # per-goal prompts from a rule it did not store
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps(raw))
    with pytest.warns(QualityWarning, match="no goal_templates.*plain templates"):
        RewardModel.load(tmp_path / "rm", goals=NEW)
    raw.update(version=1, goal_templates=goal_prompt_rules(TEMPLATES))
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps(raw))
    with pytest.raises(VlmrError, match="goal_templates need version 2"):
        RewardModel.load(tmp_path / "rm")
    raw["version"] = 3
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps(raw))
    with pytest.raises(VlmrError, match="version 3 is not readable.*upgrade vlmr"):
        RewardModel.load(tmp_path / "rm")


def test_score_cli_marks_new_goals_not_calibrated(saved, tmp_path, capsys):
    from PIL import Image

    from vlmr.cli import main

    path = tmp_path / "f.png"
    Image.fromarray(frames(1)[0]).save(path)
    args = ["score", "--model", str(saved[0]), "--calibration", str(saved[1]), "--goal", GOALS[0], "--goal", NEW[0]]
    assert main([*args, "--json", str(path)]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["calibrated"] == {GOALS[0]: True, NEW[0]: False} and result["new_goals"] == [NEW[0]]
    assert result["new_goal_fits"] == {NEW[0]: "fit.shared"}  # this calibration had no held-out goals to fit on
    assert "warning:" in out.err and "calibrated: false" in out.err
    assert main([*args, str(path)]) == 0
    table = capsys.readouterr().out
    assert re.search(rf"\[0\]\s+yes\s+{GOALS[0]}\n", table) and re.search(rf"\[1\]\s+no: new, pooled fit\s+{NEW[0]}", table)
    assert main([*args, "--strict", str(path)]) == 2
    assert "outside the calibrated goal set" in capsys.readouterr().err
