"""BabyAI goals, labellers on hand-built grids, frames, captions and the collected dataset."""

from __future__ import annotations

import numpy as np
import pytest
from vlmr.rl.envs import babyai
from vlmr.rl.envs import babyai_goals as goals

from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError


@pytest.fixture
def room():
    """A GoToLocal env emptied to an 8 x 8 walled room, agent at (3, 3) facing up (dir 3)."""
    from minigrid.core.grid import Grid

    env = babyai.make_env("BabyAI-GoToLocal-v0")
    env.reset(seed=0)
    u = env.unwrapped
    u.grid = Grid(8, 8)
    u.grid.wall_rect(0, 0, 8, 8)
    u.agent_pos, u.agent_dir, u.carrying = np.array((3, 3)), 3, None
    return env


def test_parse_goal_and_canonical_missions():
    assert goals.parse_goal("go to the red ball") == goals.Goal("goto", "red", "ball")
    assert goals.parse_goal("Pick up a blue key.") == goals.Goal("pickup", "blue", "key")
    assert goals.parse_goal("open the purple door") == goals.Goal("open", "purple", "door")
    assert babyai.canonical_mission("go to a grey key") == "go to the grey key"
    assert babyai.canonical_mission("go to a ball") is None  # no colour: not a goal of the set
    for bad in ("fly to the red ball", "go to the pink ball", "open the red ball", "pick up the red door"):
        with pytest.raises(VlmrError, match="goal"):
            goals.parse_goal(bad)


def test_goal_sets_and_unknown_env_lists_supported():
    assert babyai.goal_set("goto") == babyai.goal_set("BabyAI-GoToLocal-v0")
    assert len(babyai.goal_set("goto")) == 18 and "go to the red ball" in babyai.goal_set("goto")
    assert babyai.goal_set("open") == [f"open the {c} door" for c in goals.COLORS]
    assert "go to the red door" in babyai.goal_set("BabyAI-GoToDoor-v0")
    with pytest.raises(VlmrError, match="BabyAI-GoToLocal-v0"):
        babyai.make_env("BabyAI-Nope-v0")
    with pytest.raises(VlmrError, match="families are goto, pickup, open"):
        goals.family_goals("dance")


def test_facing_versus_adjacent_not_facing(room):
    from minigrid.core.world_object import Ball, Key

    u = room.unwrapped
    u.grid.set(3, 2, Ball("red"))  # above the agent: faced
    u.grid.set(4, 3, Key("blue"))  # right of the agent: adjacent, not faced
    gs = ["go to the red ball", "go to the blue key", "go to the red key", "pick up the red ball"]
    assert babyai.label_goals(u, gs) == {"go to the red ball": 1, "go to the blue key": 0,
                                         "go to the red key": 0, "pick up the red ball": 0}
    u.agent_dir = 0  # turn right: now the key is faced and the ball is only adjacent
    assert babyai.label_goals(room, gs)["go to the blue key"] == 1
    assert babyai.label_goals(room, gs)["go to the red ball"] == 0
    u.grid.set(4, 3, None)
    u.grid.set(5, 3, Key("blue"))  # two cells away: not "at" it
    assert babyai.label_goals(u, gs)["go to the blue key"] == 0


def test_carrying(room):
    from minigrid.core.world_object import Ball

    u = room.unwrapped
    gs = ["pick up the green ball", "pick up the red ball", "go to the green ball"]
    assert babyai.label_goals(u, gs) == dict.fromkeys(gs, 0)
    u.carrying = Ball("green")
    assert babyai.label_goals(u, gs) == {"pick up the green ball": 1, "pick up the red ball": 0,
                                         "go to the green ball": 0}


def test_door_open_or_closed(room):
    from minigrid.core.world_object import Door

    u = room.unwrapped
    door = Door("yellow", is_open=False)
    u.grid.set(7, 3, door)
    gs = ["open the yellow door", "open the red door", "go to the yellow door"]
    assert babyai.label_goals(u, gs) == dict.fromkeys(gs, 0)
    door.is_open = True
    assert babyai.label_goals(u, gs) == {"open the yellow door": 1, "open the red door": 0,
                                         "go to the yellow door": 0}


@pytest.mark.parametrize("size,tile", [(64, 9), (112, 16)])
def test_egocentric_frame_shows_faced_object_at_bottom_centre(room, size, tile):
    from minigrid.core.world_object import Ball

    u = room.unwrapped
    u.grid.set(3, 2, Ball("red"))
    frame = babyai.render_frame(u, size)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    red = (frame[..., 0] > 200) & (frame[..., 1] < 120) & (frame[..., 2] < 120)  # red, lightened by the view mask
    assert red[5 * tile:6 * tile, 3 * tile:4 * tile].sum() > tile  # the red ball, in the cell just above the agent
    assert not red[:5 * tile].any() and not red[5 * tile:6 * tile, :3 * tile].any()


def test_make_env_render_and_topdown():
    env = babyai.make_env("BabyAI-GoToLocal-v0", view="egocentric", image_size=64)
    env.reset(seed=3)
    env.step(env.unwrapped.actions.left)
    assert env.render().shape == (64, 64, 3)
    top = babyai.make_env("BabyAI-GoToLocal-v0", view="topdown", image_size=64)
    top.reset(seed=3)
    assert top.render().shape == (64, 64, 3)
    with pytest.raises(VlmrError, match="views are egocentric, egocentric_carry, topdown"):
        babyai.make_env("BabyAI-GoToLocal-v0", view="sideways")
    with pytest.raises(VlmrError, match="env_kwargs view 'sideways'"):
        babyai.make_env("BabyAI-GoToLocal-v0", env_kwargs={"view": "sideways"})


def test_egocentric_carry_shows_what_is_held_and_nothing_else_changes(room):
    from minigrid.core.world_object import Ball

    u = room.unwrapped
    plain, carry = babyai.render_frame(u, 64), babyai.render_frame(u, 64, "egocentric_carry")
    assert np.array_equal(plain, carry)  # empty-handed: the same frame
    u.carrying = Ball("blue")
    plain, carry = babyai.render_frame(u, 64), babyai.render_frame(u, 64, "egocentric_carry")
    cell = (slice(6 * 9, 7 * 9), slice(3 * 9, 4 * 9))  # the agent's cell: bottom row, centre column, 9 px tiles
    outside = np.ones(plain.shape[:2], bool)
    outside[cell] = False
    assert np.array_equal(plain[outside], carry[outside])
    red = (carry[cell][..., 0] > 200) & (carry[cell][..., 2] < 120)
    blue = (carry[cell][..., 2] > 200) & (carry[cell][..., 0] < 120)
    assert not red.any() and blue.sum() > ((plain[cell][..., 2] > 200) & (plain[cell][..., 0] < 120)).sum()
    # PPO's envs take the view from env_kwargs, the way a compare passes it
    env = babyai.make_env("BabyAI-PickupLoc-v0", env_kwargs={"view": "egocentric_carry"}, memo_render=True)
    env.reset(seed=0)
    env.unwrapped.carrying = Ball("blue")
    assert np.array_equal(env.render(), babyai.render_frame(env.unwrapped, 64, "egocentric_carry"))


def test_captions_paraphrase_the_state(room):
    from minigrid.core.world_object import Ball, Key

    u = room.unwrapped
    u.grid.set(3, 2, Ball("red"))
    u.carrying = Key("blue")
    _, grid, vis = babyai._pov(u, 64)
    caps = babyai.frame_captions(u, grid, vis, np.random.default_rng(0))
    assert caps[0] == "the agent is next to the red ball"
    assert "a red ball right in front of the agent" in caps and "the agent carries the blue key" in caps
    u.grid.set(3, 2, None)
    u.carrying = None
    assert babyai.frame_captions(u)[0] == "nothing right in front of the agent"


def test_babyai_dataset_has_own_goal_positives_and_hard_negatives(babyai_dataset):
    m = read_manifest(babyai_dataset)
    assert m["view"] == "egocentric" and m["goals"] == babyai.goal_set("BabyAI-GoToLocal-v0")
    a = load_split_arrays(babyai_dataset, "train")
    assert a.frames.shape == (384, 64, 64, 3)
    assert (a.own_goal >= 0).all()  # every mission is in the goal set
    own = a.labels[np.arange(len(a.own_goal)), a.own_goal]
    assert 0.05 < own.mean() < 0.6
    other = a.labels.sum(1) - own
    assert (other > 0).sum() > 5  # frames positive for a goal other than the episode's mission


def test_bot_episode_reaches_the_goal_with_no_noise():
    src = babyai.BabyAISource("BabyAI-GoToLocal-v0", noise=0.0, linger=0)
    hits = 0
    for seed in range(10):
        frames = list(src.episode(seed))
        if frames:
            hits += frames[-1][1]["labels"][frames[-1][1]["mission"]]
    assert hits >= 7


def test_env_mix_takes_turns_and_records_each_frames_env():
    src = babyai.BabyAISource("BabyAI-GoToLocal-v0", image_size=64, env_mix=["BabyAI-GoToObj-v0"], max_steps=4)
    seen = {}
    for seed in range(8):
        for _, meta in src.episode(seed):
            seen.setdefault(meta["env"], set()).add(seed % 2)
            assert set(meta["labels"]) == set(babyai.goal_set("BabyAI-GoToLocal-v0"))
    assert seen == {"BabyAI-GoToLocal-v0": {0}, "BabyAI-GoToObj-v0": {1}}
    with pytest.raises(VlmrError, match="BabyAI-Foo-v0"):
        babyai.BabyAISource("BabyAI-GoToLocal-v0", env_mix=["BabyAI-Foo-v0"])
