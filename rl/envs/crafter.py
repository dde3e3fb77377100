"""The Crafter family: goals from achievements, labels decidable from the frame, a scripted noisy policy.

    vlmr collect configs/data/crafter.yaml
    world = make_world(seed=0, image_size=64); frame = world.render()
    labels = label_goals(world, GOALS)
    env = make_env(ENV_ID, image_size=64, env_kwargs={"goals": ["collect wood"]})   # PPO's env (crafter_gym.py)

A Crafter frame is the 9 x 7 cells around the player plus a 9 x 2 inventory bar
(items with count >= 1, with their count). A goal is labelled 1 exactly when
the frame shows it (VISUAL_RULES):
  collect wood / sapling / stone / coal / iron / diamond   that item is in the inventory bar
  make a wood / stone / iron pickaxe, ... sword            that tool is in the inventory bar
  place a table / furnace                                   a table / furnace is in the 9 x 7 view
                                                            (they never occur naturally)
  place a plant                                             a planted sapling is in the view
                                                            (plants only come from placing saplings)
Achievements a single frame cannot show are not goals: collect drink, eat cow,
eat plant, defeat zombie/skeleton, wake up (momentary events), and place stone
(natural stone is everywhere). Note the labels say what the frame shows, not
whether the achievement was ever unlocked: wood spent on a table leaves the bar.
"""

from __future__ import annotations

import numpy as np

from vlmr.core.errors import VlmrError

INVENTORY_GOALS = {
    "collect wood": "wood", "collect sapling": "sapling", "collect stone": "stone", "collect coal": "coal",
    "collect iron": "iron", "collect diamond": "diamond",
    "make a wood pickaxe": "wood_pickaxe", "make a stone pickaxe": "stone_pickaxe",
    "make an iron pickaxe": "iron_pickaxe", "make a wood sword": "wood_sword",
    "make a stone sword": "stone_sword", "make an iron sword": "iron_sword",
}
VIEW_GOALS = {"place a table": "table", "place a furnace": "furnace", "place a plant": "plant"}
GOALS = [*INVENTORY_GOALS, *VIEW_GOALS]
VISUAL_RULES = {**{g: f"'{item}' shown in the inventory bar (count >= 1)" for g, item in INVENTORY_GOALS.items()},
                **{g: f"a {what} within the 9 x 7 cells in view" for g, what in VIEW_GOALS.items()}}
VIEW_HALF = (4, 3)  # the local view spans player x +- 4, y +- 3
_ITEM_WORDS = {"wood_pickaxe": "wood pickaxe", "stone_pickaxe": "stone pickaxe", "iron_pickaxe": "iron pickaxe",
               "wood_sword": "wood sword", "stone_sword": "stone sword", "iron_sword": "iron sword"}


NAME = "crafter"
ENV_ID = "vlmr/CrafterGoal-v0"
ENV_ID_PREFIXES = ("vlmr/Crafter",)
DEFAULT_GOALS = ("collect wood",)  # reachable from a fresh world in tens of steps; longer chains need more PPO
ENV_OPTIONS = ("goals", "max_steps", "area", "obs_size")  # CrafterGoalEnv's options (PPOConfig.env_kwargs)


class _OrderedSet(dict):
    """The set operations crafter uses on a chunk's objects, iterating in insertion order."""

    def add(self, obj) -> None:
        self[obj] = None

    def remove(self, obj) -> None:
        del self[obj]


def make_reproducible() -> None:
    """Make crafter's worlds depend on their seed alone.

    crafter keeps each chunk's creatures in a plain set, which iterates in memory-address order, and
    picks the creature to despawn by index into it: the same seed gave different worlds in different
    processes (so did `vlmr collect` shards and PPO runs). Chunks that iterate in insertion order fix it.
    """
    import collections

    from crafter import engine

    if getattr(engine.World.reset, "ordered_chunks", False):
        return
    reset = engine.World.reset

    def ordered_reset(self, seed=None):
        reset(self, seed)
        self._chunks = collections.defaultdict(_OrderedSet)

    ordered_reset.ordered_chunks = True
    engine.World.reset = ordered_reset


def make_world(seed: int = 0, image_size: int = 64):
    """A plain crafter.Env (the data side: no goal, no truncation), reset to the world of `seed`."""
    import crafter

    make_reproducible()
    env = crafter.Env(size=(image_size, image_size), seed=seed)
    env.reset()
    return env


def check_goals(goals) -> list[str]:
    goals = list(goals)
    unknown = [g for g in goals if g not in GOALS]
    if unknown or not goals:
        raise VlmrError(f"{ENV_ID}: unknown goals {unknown}; choose from {GOALS}")
    return goals


def check_env(env_id: str, obs_mode: str | None = "pixels", env_kwargs: dict | None = None) -> None:
    if env_id != ENV_ID:
        raise VlmrError(f"unknown Crafter env {env_id!r}; the Crafter family has {ENV_ID}")
    if obs_mode not in (None, "pixels"):
        raise VlmrError(f"{env_id} has no {obs_mode} observation: set obs_mode=pixels")
    unknown = sorted(set(env_kwargs or {}) - set(ENV_OPTIONS))
    if unknown:
        raise VlmrError(f"env_kwargs {unknown} unknown to {env_id}; it takes {sorted(ENV_OPTIONS)}")
    goal_set(env_id, env_kwargs)


def make_env(env_id: str = ENV_ID, image_size: int = 64, obs_mode: str | None = "pixels",
             env_kwargs: dict | None = None, memo_render: bool = False):
    """PPO's goal-conditioned env (rl/envs/crafter_gym.py): obs the 64 px view, render() at image_size.

    memo_render has nothing to reuse here: the env keeps the frame crafter drew for obs and renders it once.
    """
    from vlmr.rl.envs.crafter_gym import CrafterGoalEnv

    check_env(env_id, obs_mode, env_kwargs)
    return CrafterGoalEnv(image_size=image_size, **(env_kwargs or {}))


def goal_set(env_id: str | None = None, env_kwargs: dict | None = None) -> list[str]:
    """The missions of env_id with these options (default: collect wood); env_id None: every labelled goal."""
    if env_id is None:
        return list(GOALS)
    return check_goals((env_kwargs or {}).get("goals") or DEFAULT_GOALS)


def canonical_mission(mission: str) -> str | None:
    return mission if mission in GOALS else None


def action_names(env_id: str | None = None) -> list[str]:
    import crafter

    return list(crafter.constants.actions)


def _game(env):
    """The crafter.Env of a plain world or of PPO's CrafterGoalEnv."""
    return getattr(getattr(env, "unwrapped", env), "_env", env)


def render_frame(env, image_size: int = 64) -> np.ndarray:
    return _game(env).render((image_size, image_size))


def reseed(env, seed: int):
    """Reset to the world of `seed` (crafter seeds worlds by (seed, episode number))."""
    env._seed, env._episode = seed, 0
    return env.reset()


def _view_box(env):
    (px, py), (hx, hy) = env._player.pos, VIEW_HALF
    return max(0, px - hx), px + hx + 1, max(0, py - hy), py + hy + 1


def in_view(env) -> set[str]:
    """Materials and object kinds (lower-case class names) inside the local view."""
    world = env._world
    x0, x1, y0, y1 = _view_box(env)
    found = {world._mat_names[i] for i in np.unique(world._mat_map[x0:x1, y0:y1]).tolist()}
    found |= {type(o).__name__.lower() for o in world.objects if x0 <= o.pos[0] < x1 and y0 <= o.pos[1] < y1}
    return found


def label_goals(env, goals: list[str]) -> dict[str, int]:
    env = _game(env)
    inv = env._player.inventory
    seen = None
    labels = {}
    for g in goals:
        if g in INVENTORY_GOALS:
            labels[g] = int(inv[INVENTORY_GOALS[g]] >= 1)
        elif g in VIEW_GOALS:
            seen = in_view(env) if seen is None else seen
            labels[g] = int(VIEW_GOALS[g] in seen)
        else:
            raise VlmrError(f"unknown Crafter goal {g!r}; goals are {', '.join(GOALS)}")
    return labels


def captions(env, labels: dict[str, int], rng) -> list[str]:
    inv, seen = env._player.inventory, in_view(env)
    p = env._player
    facing = env._world[(p.pos[0] + p.facing[0], p.pos[1] + p.facing[1])][0]
    items = [_ITEM_WORDS.get(k, k) for k in INVENTORY_GOALS.values() if inv[k] >= 1]
    groups = []
    if items:
        listed = ", ".join(items)
        groups.append([f"the inventory holds {listed}", f"the player has collected {listed}",
                       f"{listed} in the inventory bar"])
    for what in ("table", "furnace", "plant"):
        if what in seen:
            name = {"table": "crafting table", "plant": "sapling plant"}.get(what, what)
            groups.append([f"a {name} is in view", f"the player placed a {name}", f"there is a {name} nearby"])
    if facing in ("tree", "water", "stone", "coal", "iron", "diamond", "table", "lava"):
        groups.append([f"the player faces {'a ' if facing in ('tree', 'table') else ''}{facing}",
                       f"the player stands next to {'a ' if facing in ('tree', 'table') else ''}{facing}"])
    if not groups:
        groups.append(["the player walks on the grass with an empty inventory", "an empty inventory",
                       "the player has collected nothing yet"])
    first = groups[0][0]
    rest = [s for g in groups for s in g if s != first]
    rng.shuffle(rest)
    return [first, *rest]


def state_meta(env, goals: list[str], rng) -> dict:
    """What a frame of the env's current state is stored with: {"labels": every goal's ground truth, "captions"}.

    The collection source and the rollout recorder both label through here; env: a crafter world or PPO's env.
    """
    game = _game(env)
    labels = label_goals(game, goals)
    return {"labels": labels, "captions": captions(game, labels, rng)}


class ScriptedPolicy:
    """Collect wood, place a table, make wood tools, then stone; plant saplings; epsilon-random steps."""

    MOVES = {(-1, 0): 1, (1, 0): 2, (0, -1): 3, (0, 1): 4}

    def __init__(self, env, rng, noise: float = 0.2, focus: tuple[str, ...] | None = None):
        import crafter

        self.env, self.rng, self.noise = env, rng, noise
        focus = set(focus or ())
        # aimed at saplings and plants: pick grass far more often, and plant every sapling rather than half
        self.grass_do = 0.5 if focus & {"collect sapling", "place a plant"} else 0.1
        self.plant = 0.9 if "place a plant" in focus else 0.5
        self.roams_allowed = not focus & {"make a stone pickaxe", "place a furnace", "collect stone"}
        self.actions = {name: i for i, name in enumerate(crafter.constants.actions)}
        self.random_actions = [i for n, i in self.actions.items() if n not in ("noop", "sleep")]
        self.heading, self.wander = (1, 0), 0
        self.roams = rng.random() < 0.5 and self.roams_allowed  # some leave the table behind once tools are made

    def _toward(self, target: str) -> int | None:
        """Action to approach/face the nearest `target` material in view, or None if none is in view."""
        world, p = self.env._world, self.env._player
        x0, x1, y0, y1 = _view_box(self.env)
        mask = world._mat_map[x0:x1, y0:y1] == world._mat_ids[target]
        if not mask.any():
            return None
        xs, ys = np.nonzero(mask)
        d = np.abs(xs + x0 - p.pos[0]) + np.abs(ys + y0 - p.pos[1])
        k = int(np.argmin(d))
        dx, dy = int(xs[k] + x0 - p.pos[0]), int(ys[k] + y0 - p.pos[1])
        if abs(dx) + abs(dy) == 1:
            if tuple(p.facing) == (dx, dy):
                return self.actions["do"]
            return self.MOVES[(dx, dy)]  # moving into a solid cell only turns the player
        step = (int(np.sign(dx)), 0) if dx and (abs(dx) >= abs(dy) or self.rng.random() < 0.3) else (0, int(np.sign(dy)))
        return self.MOVES[step]

    def _place(self, action: str) -> int:
        p = self.env._player
        facing = self.env._world[(p.pos[0] + p.facing[0], p.pos[1] + p.facing[1])]
        if facing[0] in ("grass", "sand", "path") and facing[1] is None:
            return self.actions[action]
        return int(self.rng.choice([1, 2, 3, 4]))  # turn or step until facing free ground

    def __call__(self) -> int:
        a, inv, p = self.actions, self.env._player.inventory, self.env._player
        if self.rng.random() < self.noise:
            return int(self.rng.choice(self.random_actions))
        if self.wander > 0:  # persistent exploration: walk one way for a while
            self.wander -= 1
            return self.MOVES[self.heading]
        if inv["drink"] < 5 and (act := self._toward("water")) is not None:
            return act
        near, _ = self.env._world.nearby(p.pos, 1)
        if "table" in near:
            for tool, needs in (("wood_pickaxe", "wood"), ("wood_sword", "wood"), ("stone_pickaxe", "stone")):
                if inv[tool] == 0 and inv[needs] >= 1 and inv["wood"] >= 1:
                    return a[f"make_{tool}"]
        if inv["sapling"] and self.rng.random() < self.plant:
            return self._place("place_plant")
        seen = in_view(self.env)
        if inv["wood"] >= 3 and "table" not in seen:
            return self._place("place_table")
        if inv["stone"] >= 4 and "furnace" not in seen and self.rng.random() < 0.5:
            return self._place("place_furnace")
        if self.roams and inv["wood_pickaxe"] and self.rng.random() < 0.15:
            return self._explore()
        wants = ["tree"]
        if inv["wood"] >= 1 and "table" in seen and not (inv["wood_pickaxe"] and inv["wood_sword"]):
            wants = ["table", "tree"]
        elif inv["wood_pickaxe"] and inv["wood"] >= 2:
            wants = ["stone", "tree"]
        for target in wants:
            if target == "table" and "table" in near:
                continue
            act = self._toward(target)
            if act is not None:
                return act
        if self.rng.random() < self.grass_do:
            return a["do"]  # on grass: a chance of a sapling
        return self._explore()

    def _explore(self) -> int:
        self.heading = list(self.MOVES)[int(self.rng.integers(4))]
        self.wander = int(self.rng.integers(4, 15))
        return self.MOVES[self.heading]


class CrafterSource:
    """Collection source: episodes of the scripted policy; every frame labelled for every goal."""

    name, view = "crafter", "egocentric"
    aims = True  # episode(env_seed, focus=goals): the scripted policy favours the steps that reach those goals

    def __init__(self, image_size: int = 64, goals: list[str] | None = None, max_steps: int = 300,
                 noise: float = 0.2):
        self.goals = list(goals) if goals else list(GOALS)
        unknown = [g for g in self.goals if g not in GOALS]
        if unknown:
            raise VlmrError(f"unknown Crafter goals {unknown}; goals are {', '.join(GOALS)} "
                            "(achievements a frame cannot show are left out, see rl/envs/crafter.py)")
        self.image_size, self.max_steps, self.noise = image_size, max_steps, noise
        self.env = make_world(0, image_size)

    def episode(self, env_seed: int, focus: tuple[str, ...] | None = None):
        env = self.env
        frame = reseed(env, env_seed)
        rng = np.random.default_rng([env_seed, 2])
        policy = ScriptedPolicy(env, rng, self.noise, focus)
        for _ in range(self.max_steps):
            yield frame, {"env": "crafter", "mission": None, **state_meta(env, self.goals, rng)}
            frame, _, done, _ = env.step(policy())
            if done:
                return


def make_source(cfg) -> CrafterSource:
    return CrafterSource(cfg.image_size, cfg.goals, cfg.max_steps, cfg.noise)
