"""The BabyAI family (BabyAI and other MiniGrid ids): envs, frames, goal sets, labels, the collection source.

    env = make_env("BabyAI-GoToLocal-v0", image_size=64)   # obs_mode="symbolic"/"pixels": PPO's policy view
    obs, _ = env.reset(seed=0)
    frame = env.render()                                   # uint8 64 x 64 x 3, the agent's point of view
    goals = goal_set("BabyAI-GoToLocal-v0")               # 18 x "go to the {color} {ball|box|key}"
    labels = label_goals(env.unwrapped, goals)             # {goal: 0/1} from the env state
    vlmr collect configs/data/babyai_goto.yaml

Views: "egocentric" (default) is minigrid's point-of-view render of the 7 x 7
cells ahead, agent at the bottom centre, the faced cell just above it, a
carried object drawn in the agent's cell under the agent's triangle, which
hides most of it at 64 px (a red key and a red ball look alike there).
"egocentric_carry" draws a carried object in that cell without the triangle:
the agent never moves in this view, so the triangle says nothing a frame
needs, and what is held becomes visible. "topdown" is the whole grid. Frames
are rendered directly at the model's size by picking the tile size
(image_size // cells) and padding the few leftover pixels with black, so no
resize is needed (64 px: tile 9 -> 63 px + 1; 112 px: tile 16 exactly).
Other MiniGrid ids (MiniGrid-Empty-5x5-v0, ...) get the same frames and no goal set.

Labels (every goal of the set, for every frame):
  "go to the C T"    the agent faces a C T in the adjacent cell (BabyAI's own success test)
  "pick up the C T"  the agent carries a C T
  "open the C door"  a C door anywhere in the grid is open
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict

import gymnasium as gym
import numpy as np
from vlmr.rl.envs.babyai_goals import (
    ALL_TYPES,
    FAMILIES,
    OBJECT_TYPES,
    attribute_captions,
    family_goals,
    goal_sentence,
    parse_goal,
    try_parse_goal,
)
from vlmr.rl.envs.babyai_labels import (  # noqa: F401 - label_goals, frame_captions: the family interface
    frame_captions,
    front_and_carried,
    label_goals,
    state_meta,
)

from vlmr.core.errors import VlmrError

VIEWS = ("egocentric", "egocentric_carry", "topdown")
EGOCENTRIC = ("egocentric", "egocentric_carry")  # views drawn from gen_obs_grid()
# env id -> (family, object types of its goal set). Missions outside the set (e.g. "go to a ball") are skipped.
ENVS = {
    **{f"BabyAI-{n}-v0": ("goto", OBJECT_TYPES) for n in (
        "GoToLocal", "GoToObj", "GoToObjS4", "GoToRedBall", "GoToRedBallGrey", "GoToRedBallNoDists",
        "GoToRedBlueBall", "GoToLocalS5N2", "GoToLocalS6N2", "GoToLocalS6N3", "GoToLocalS6N4", "GoToLocalS7N4",
        "GoToLocalS7N5", "GoToLocalS8N2", "GoToLocalS8N3", "GoToLocalS8N4", "GoToLocalS8N5", "GoToLocalS8N6",
        "GoToLocalS8N7")},
    "BabyAI-GoToObjS6-v1": ("goto", OBJECT_TYPES),
    **{f"BabyAI-{n}-v0": ("goto", ALL_TYPES) for n in ("GoTo", "GoToDoor", "GoToObjDoor", "GoToObjMaze",
                                                        "GoToObjMazeOpen")},
    **{f"BabyAI-{n}-v0": ("pickup", OBJECT_TYPES) for n in ("Pickup", "PickupLoc", "PickupDist", "UnblockPickup")},
    **{f"BabyAI-{n}-v0": ("open", ("door",)) for n in ("Open", "OpenRedDoor", "OpenDoorColor")},
}


NAME = "babyai"
ENV_ID_PREFIXES = ("BabyAI-", "MiniGrid-")
OBS_MODES = ("symbolic", "pixels")
ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")  # MiniGrid's Actions, in order
ENV_OPTIONS = {"goals": "draw episodes only for these missions (a subset of the env's goal set, e.g. held-out goals)",
               "view": f"the frame the reward model sees: one of {', '.join(VIEWS)} (as the data it was trained on)"}


def _check_env_id(env_id: str) -> tuple[str, tuple[str, ...]]:
    if env_id not in ENVS:
        raise VlmrError(f"unknown env_id {env_id!r}: not a supported BabyAI environment; "
                        f"supported: {', '.join(ENVS)}")
    return ENVS[env_id]


def check_env(env_id: str, obs_mode: str | None = None, env_kwargs: dict | None = None) -> None:
    """A supported BabyAI id or any registered MiniGrid id; obs_mode None is minigrid's own obs dict."""
    import minigrid  # noqa: F401 - registers the MiniGrid and BabyAI ids

    if env_id.startswith("BabyAI-"):
        _check_env_id(env_id)
    elif env_id not in gym.registry:
        raise VlmrError(f"unknown env_id {env_id!r}: not a registered MiniGrid id")
    if obs_mode is not None and obs_mode not in OBS_MODES:
        raise VlmrError(f"unknown obs_mode {obs_mode!r}; {env_id} has {', '.join(OBS_MODES)}")
    unknown = sorted(set(env_kwargs or {}) - set(ENV_OPTIONS))
    if unknown:
        raise VlmrError(f"env_kwargs {unknown}: {env_id} takes only {sorted(ENV_OPTIONS)}")
    if (env_kwargs or {}).get("goals") is not None:
        mission_subset(env_id, env_kwargs["goals"])
    if (env_kwargs or {}).get("view", "egocentric") not in VIEWS:
        raise VlmrError(f"env_kwargs view {env_kwargs['view']!r}: views are {', '.join(VIEWS)}")


def goal_set(env_id: str, env_kwargs: dict | None = None) -> list[str] | None:
    """The goals of a supported BabyAI id (only env_kwargs' `goals` when given) or a goal family ('goto', 'pickup',
    'open'); None for other MiniGrid ids."""
    if env_id in FAMILIES:
        return family_goals(env_id)
    if env_id.startswith("MiniGrid-"):
        return None
    if (env_kwargs or {}).get("goals") is not None:
        return mission_subset(env_id, env_kwargs["goals"])
    family, types = _check_env_id(env_id)
    return family_goals(family, types)


def mission_subset(env_id: str, goals) -> list[str]:
    """env_kwargs `goals` checked against env_id's goal set: episodes are then drawn only for these missions."""
    goals = [goals] if isinstance(goals, str) else list(goals)
    if not env_id.startswith("BabyAI-"):
        raise VlmrError(f"env_kwargs goals: {env_id} has no goal set to draw missions from (BabyAI ids have)")
    family, types = _check_env_id(env_id)
    allowed = family_goals(family, types)
    unknown = [g for g in goals if g not in allowed]
    if unknown or not goals:
        raise VlmrError(f"env_kwargs goals {unknown or goals}: not missions of {env_id} (e.g. {allowed[:2]}); "
                        "give goal sentences of its goal set")
    return goals


class MissionFilter(gym.Wrapper):
    """Episodes only for the missions in `goals`: a reset whose mission is outside them is redrawn.

    A seeded reset (seed s) tries s, then s + k * SEED_STRIDE for k = 1, 2, ..., so held-out evaluation
    seeds map to the same episodes in every run and never meet the small seeds of the other splits;
    an unseeded reset (autoreset) redraws from the env's own generator, which stays reproducible.
    """

    SEED_STRIDE = 1_000_000_007  # far above every seed range vlmr uses (data splits, eval, rollouts)
    MAX_TRIES = 1000  # a goal subset drawn 1 time in 18 needs ~18 tries on average

    def __init__(self, env, goals: list[str]):
        super().__init__(env)
        self.goals = set(goals)

    def reset(self, *, seed=None, options=None):
        for k in range(self.MAX_TRIES):
            obs, info = self.env.reset(seed=None if seed is None else seed + k * self.SEED_STRIDE, options=options)
            if canonical_mission(self.env.unwrapped.mission) in self.goals:
                return obs, info
        raise VlmrError(f"{self.env.spec.id if self.env.spec else 'env'}: no mission in {sorted(self.goals)[:3]} "
                        f"after {self.MAX_TRIES} resets; is the subset reachable in this env?")


def canonical_mission(mission: str) -> str | None:
    """'go to a grey key' -> 'go to the grey key'; None when the mission names no colour or does not parse."""
    g = try_parse_goal(mission)
    if g is None or g.color is None:
        return None
    return goal_sentence(g.family, g.color, g.type)


def action_names(env_id: str | None = None) -> list[str]:
    return list(ACTION_NAMES)


class Frames(gym.Wrapper):
    """render() is the reward model's frame (see the module docstring); resets are quiet."""

    def __init__(self, env, view: str, image_size: int):
        super().__init__(env)
        self.view, self.image_size = view, image_size

    def render(self):
        return render_frame(self.env.unwrapped, self.image_size, self.view)

    def reset(self, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints "Sampling rejected" lines
            return self.env.reset(**kwargs)


class MemoRender(gym.Wrapper):
    """render() memoised on what minigrid draws the egocentric frame from: the view grid and its visibility.

    The key is the full encoding (type, colour, state of every cell, hidden ones too, and the carried
    object) of `gen_obs_grid()`'s view plus the visibility mask, so equal keys mean equal frames; it
    costs ~0.1 ms against ~0.25 ms for drawing. One LRU table per process, shared by its envs.
    """

    memo: OrderedDict = OrderedDict()
    max_bytes = 128 << 20  # ~10000 frames at 64 px, ~3500 at 112 px
    used_bytes = 0

    def __init__(self, env, image_size: int, view: str = "egocentric"):
        super().__init__(env)
        self.image_size, self.view = image_size, view

    def render(self):
        grid, vis = self.env.unwrapped.gen_obs_grid()
        key = (self.image_size, self.view, grid.encode().tobytes(), vis.tobytes())
        frame = self.memo.get(key)
        if frame is None:
            frame = np.asarray(self.env.render())
            frame.setflags(write=False)  # shared between calls
            cls = type(self)
            cls.memo[key] = frame
            cls.used_bytes += frame.nbytes
            while cls.used_bytes > cls.max_bytes and len(cls.memo) > 1:
                cls.used_bytes -= cls.memo.popitem(last=False)[1].nbytes
        else:
            self.memo.move_to_end(key)
        return frame


class PolicyObs(gym.ObservationWrapper):
    """The policy's view of a MiniGrid obs dict: the symbolic 7x7x3 encoding, or the egocentric RGB view."""

    def __init__(self, env, obs_mode: str, tile_size: int = 8):
        super().__init__(env)
        self.obs_mode, self.tile_size = obs_mode, tile_size
        if obs_mode == "symbolic":
            self.observation_space = env.observation_space["image"]
        else:
            side = env.unwrapped.agent_view_size * tile_size
            self.observation_space = gym.spaces.Box(0, 255, (side, side, 3), np.uint8)

    def observation(self, obs):
        if self.obs_mode == "symbolic":
            return obs["image"]
        return self.env.unwrapped.get_frame(highlight=False, tile_size=self.tile_size, agent_pov=True)


def make_env(env_id: str, image_size: int = 64, obs_mode: str | None = None, env_kwargs: dict | None = None,
             memo_render: bool = False, view: str = "egocentric"):
    """A gymnasium MiniGrid env whose `render()` returns the frame (uint8 image_size x image_size x 3).

    obs_mode None keeps minigrid's obs dict; "symbolic" / "pixels" give the policy's view (PolicyObs).
    memo_render (egocentric views only, the ones it keys on) memoises frames with MemoRender.
    env_kwargs' `view`, when given, is the view (PPO's envs take their options from env_kwargs).
    """
    check_env(env_id, obs_mode, env_kwargs)
    view = (env_kwargs or {}).get("view", view)
    if view not in VIEWS:
        raise VlmrError(f"unknown view {view!r}; views are {', '.join(VIEWS)}")
    env = Frames(gym.make(env_id), view, image_size)
    if (env_kwargs or {}).get("goals") is not None:
        env = MissionFilter(env, mission_subset(env_id, env_kwargs["goals"]))
    if memo_render and view in EGOCENTRIC:
        env = MemoRender(env, image_size, view)
    return PolicyObs(env, obs_mode) if obs_mode else env


def _pad(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    if h > size or w > size:
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def _pov(env, image_size: int, view: str = "egocentric"):
    """Egocentric frame plus the view grid and visibility mask it was drawn from."""
    n = env.agent_view_size
    grid, vis = env.gen_obs_grid()  # a carried object sits in the agent's cell of this grid
    agent = None if view == "egocentric_carry" and env.carrying is not None else (n // 2, n - 1)
    img = grid.render(max(1, image_size // n), agent_pos=agent, agent_dir=3, highlight_mask=vis)
    return _pad(img, image_size), grid, vis


def render_frame(env, image_size: int = 64, view: str = "egocentric") -> np.ndarray:
    """The frame of an (unwrapped) minigrid env: uint8 image_size x image_size x 3."""
    env = env.unwrapped
    if view in EGOCENTRIC:
        return _pov(env, image_size, view)[0]
    if view == "topdown":
        tile = max(1, image_size // max(env.width, env.height))
        return _pad(env.grid.render(tile, env.agent_pos, env.agent_dir, None), image_size)
    raise VlmrError(f"unknown view {view!r}; views are {', '.join(VIEWS)}")


class BabyAISource:
    """Collection source: episodes of minigrid's BabyAIBot with noisy actions, every frame labelled."""

    name = "babyai"
    aims = True  # episode(env_seed, focus=goals) runs only episodes whose mission is one of the goals

    def __init__(self, env_id: str, view: str = "egocentric", image_size: int = 64, goals: list[str] | None = None,
                 max_steps: int = 64, noise: float = 0.2, linger: int = 3, mission_in_goals: bool = True,
                 env_mix: list[str] | tuple[str, ...] = (), attribute_captions: bool = False):
        if not env_id:
            raise VlmrError(f"source babyai needs env_id; supported: {', '.join(ENVS)}")
        # episode k runs env (k mod n) of [env_id, *env_mix]: one dataset can cover several tasks' states,
        # e.g. GoToLocal's distractor-rich rooms and the single-object rooms an agent trains in
        self.env_ids = [env_id, *env_mix]
        self.envs = {e: make_env(e, image_size, view=view) for e in self.env_ids}
        self.view, self.image_size = view, image_size
        # a family name ("goto", "pickup") stands for its goals: one data config can span families
        self.goals = [x for g in goals for x in (family_goals(g) if g in FAMILIES else [g])] if goals \
            else goal_set(env_id)
        for g in self.goals:
            parse_goal(g)
        self.goal_index = set(self.goals)
        self.max_steps, self.noise, self.linger, self.mission_in_goals = max_steps, noise, linger, mission_in_goals
        self.attribute_captions = attribute_captions

    def _frame(self, u, rng):
        if self.view in EGOCENTRIC:
            frame, grid, vis = _pov(u, self.image_size, self.view)
        else:
            frame, grid, vis = render_frame(u, self.image_size, self.view), None, None
        meta = {"env": self.env_id, "mission": self.mission, **state_meta(u, self.goals, rng, self.view, grid, vis)}
        if self.attribute_captions:
            meta["captions"] += attribute_captions(*front_and_carried(u))
        return frame, meta

    def episode(self, env_seed: int, focus: tuple[str, ...] | None = None):
        from minigrid.utils.baby_ai_bot import BabyAIBot

        self.env_id = self.env_ids[env_seed % len(self.env_ids)]
        env = self.envs[self.env_id]
        env.reset(seed=env_seed)
        u = env.unwrapped
        self.mission = canonical_mission(u.mission) or u.mission
        if (self.mission_in_goals and self.mission not in self.goal_index) or (focus and self.mission not in focus):
            return
        rng = np.random.default_rng([env_seed, 1])
        bot = BabyAIBot(u)
        frame, meta = self._frame(u, rng)
        yield frame, meta
        moves = (u.actions.left, u.actions.right, u.actions.forward)
        acts = (*moves, *moves, u.actions.pickup, u.actions.toggle)  # random steps mostly move
        taken, left = None, None
        for _ in range(self.max_steps):
            if left is None:
                try:
                    action = bot.replan(taken)
                except Exception:  # noqa: BLE001 - the bot cannot always recover from noise; stop acting as it
                    left = self.linger
                    action = acts[rng.integers(len(acts))]
                suggested = action
                if rng.random() < self.noise:
                    action = acts[rng.integers(len(acts))]
                taken = action if action != suggested else None
            else:
                if left <= 0:
                    return
                left -= 1
                action = moves[rng.integers(len(moves))]
            _, _, terminated, truncated, _ = u.step(action)
            frame, meta = self._frame(u, rng)
            yield frame, meta
            if left is None and (terminated or action == u.actions.done or meta["labels"].get(self.mission)):
                left = self.linger


def make_source(cfg) -> BabyAISource:
    return BabyAISource(cfg.env_id, cfg.view, cfg.image_size, cfg.goals, cfg.max_steps, cfg.noise, cfg.linger,
                        cfg.mission_in_goals, cfg.env_mix, cfg.attribute_captions)
