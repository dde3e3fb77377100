"""Crafter labels on scripted steps: each goal is true exactly when the frame shows it."""

from __future__ import annotations

import numpy as np
import pytest
from vlmr.rl.envs import crafter as ce

from vlmr.core.errors import VlmrError


@pytest.fixture
def env():
    e = ce.make_world(seed=0, image_size=63)  # 9 units of 7 px, no border: cells map to exact pixel blocks
    p = e._player
    p.facing = (1, 0)
    for dx in range(-5, 6):  # clear ground around the player so only scripted things are in view
        for dy in range(-4, 5):
            pos = (p.pos[0] + dx, p.pos[1] + dy)
            if tuple(pos) != tuple(p.pos):
                e._world[pos] = "grass"
    for obj in list(e._world.objects):
        if obj is not p:
            e._world.remove(obj)
    return e


def act(env, name):
    import crafter

    return env.step(crafter.constants.actions.index(name))


def labels(env):
    return ce.label_goals(env, ce.GOALS)


def test_scripted_steps_collect_place_make(env):
    p = env._player
    front = (p.pos[0] + 1, p.pos[1])
    assert sum(labels(env).values()) == 0
    env._world[front] = "tree"
    act(env, "do")
    assert p.inventory["wood"] == 1 and labels(env)["collect wood"] == 1
    p.inventory["wood"] = 3
    env._world[front] = "grass"
    act(env, "place_table")
    assert env._world[front][0] == "table"
    lab = labels(env)
    assert lab["place a table"] == 1 and lab["make a wood pickaxe"] == 0
    act(env, "make_wood_pickaxe")
    lab = labels(env)
    assert lab["make a wood pickaxe"] == 1 and lab["collect wood"] == 0  # the last wood went into the pickaxe
    assert sum(lab.values()) == 2


def _cell(frame, dx, dy, unit=7):
    x, y = dx + ce.VIEW_HALF[0], dy + ce.VIEW_HALF[1]
    return frame[y * unit:(y + 1) * unit, x * unit:(x + 1) * unit]


def test_view_goals_follow_what_the_frame_shows(env):
    p = env._player
    before = env.render()
    corner = (p.pos[0] + 4, p.pos[1] + 3)  # the last cell in view
    env._world[corner] = "table"
    after = env.render()
    assert labels(env)["place a table"] == 1
    assert not np.array_equal(_cell(before, 4, 3), _cell(after, 4, 3))  # the table is drawn there
    env._world[corner] = "grass"
    beyond = (p.pos[0] + 5, p.pos[1])
    env._world[beyond] = "furnace"
    assert labels(env)["place a furnace"] == 0
    assert np.array_equal(env.render(), before)  # out of view: the frame does not show it


def test_inventory_goals_show_in_the_inventory_bar(env):
    before = env.render()
    env._player.inventory["stone_pickaxe"] = 1
    assert labels(env)["make a stone pickaxe"] == 1
    after = env.render()
    bar = slice(7 * 7, 63)
    assert not np.array_equal(before[bar], after[bar]) and np.array_equal(before[:49], after[:49])


def test_unknown_goal_lists_goals():
    with pytest.raises(VlmrError, match="collect wood"):
        ce.CrafterSource(goals=["eat cow"])
    assert "eat cow" not in ce.GOALS and set(ce.VISUAL_RULES) == set(ce.GOALS)


def test_scripted_policy_reaches_tools():
    src = ce.CrafterSource(64, max_steps=120, noise=0.1)
    seen = {g: 0 for g in ce.GOALS}
    for seed in range(2):
        for _, meta in src.episode(seed):
            for g, v in meta["labels"].items():
                seen[g] += v
            assert meta["captions"] and meta["mission"] is None
    assert seen["collect wood"] and seen["place a table"] and seen["make a wood pickaxe"]


def test_collection_is_the_same_in_every_process(tmp_path):
    """crafter picks creatures to despawn by their order in a set; without ordered chunks two processes differ."""
    import json
    import os
    import subprocess
    import sys

    def shard_hashes(run: int) -> list[str]:
        out = tmp_path / f"run{run}"
        env = {**os.environ, "PYTHONHASHSEED": str(run)}
        subprocess.run([sys.executable, "-m", "vlmr", "collect", "--source", "crafter", f"out_dir={out}",
                        "frames.train=1200", "frames.val=0", "frames.test=0", "shard_size=1200", "--quiet"],
                       env=env, check=True, capture_output=True, timeout=300)
        manifest = json.loads((out / "manifest.json").read_text())
        return [s["sha256"] for s in manifest["splits"]["train"]["shards"]]

    assert shard_hashes(1) == shard_hashes(2)
