"""BabyAI labels and captions from the env state: what every frame is stored with (collection and rollouts).

    labels = label_goals(env.unwrapped, goals)     # {goal: 0/1}
    meta = state_meta(env, goals, rng)             # {"labels": ..., "captions": [...]}

The rules per goal family are in rl/envs/babyai.py's docstring; babyai.py re-exports these functions as
part of the family interface (rl/envs/__init__.py).

Tests: `.venv/bin/python -m pytest tests/test_data_babyai.py -q`
"""

from __future__ import annotations

from vlmr.rl.envs.babyai_goals import ALL_TYPES, parse_goal, state_captions


def _front(env):
    fx, fy = env.front_pos
    if 0 <= fx < env.width and 0 <= fy < env.height:
        return env.grid.get(fx, fy)
    return None


def open_door_colors(env) -> set[str]:
    return {o.color for o in env.grid.grid if o is not None and o.type == "door" and o.is_open}


def _match(obj, goal) -> bool:
    return obj is not None and obj.type == goal.type and (goal.color is None or obj.color == goal.color)


def label_goals(env, goals: list[str]) -> dict[str, int]:
    """Ground truth of every goal from the env state (see the module docstring for each family's rule)."""
    env = env.unwrapped
    front, carrying, doors = _front(env), env.carrying, None
    labels = {}
    for sentence in goals:
        g = parse_goal(sentence)
        if g.family == "goto":
            labels[sentence] = int(_match(front, g))
        elif g.family == "pickup":
            labels[sentence] = int(_match(carrying, g))
        else:
            if doors is None:
                doors = open_door_colors(env)
            labels[sentence] = int(g.color in doors if g.color else bool(doors))
    return labels


def front_and_carried(env, front=None) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(colour, type) of the faced object (`front`: its WorldObj when already looked up) and of the carried one."""
    front = front if front is not None else _front(env)
    ft = (front.color, front.type) if front is not None and front.type in ALL_TYPES else None
    return ft, ((env.carrying.color, env.carrying.type) if env.carrying is not None else None)


def frame_captions(env, grid=None, vis=None, rng=None) -> list[str]:
    """Paraphrased sentences about the egocentric frame, from the env state (canonical one first)."""
    env = env.unwrapped
    front = _front(env)
    ft, carrying = front_and_carried(env, front)
    visible, open_doors = [], []
    if grid is not None:
        n = env.agent_view_size
        for j in range(n - 1, -1, -1):  # nearest rows first
            for i in range(n):
                o = grid.get(i, j)
                if o is None or not vis[i, j] or o.type not in ALL_TYPES or (i, j) in ((n // 2, n - 1), (n // 2, n - 2)):
                    continue
                if o.type == "door" and o.is_open:
                    open_doors.append(o.color)
                else:
                    visible.append((o.color, o.type))
    if front is not None and front.type == "door" and front.is_open and front.color not in open_doors:
        open_doors.append(front.color)
    return state_captions(ft, carrying, tuple(open_doors), tuple(visible),
                          front_wall=front is not None and front.type == "wall", rng=rng)


def state_meta(env, goals: list[str], rng, view: str = "egocentric", grid=None, vis=None) -> dict:
    """What a frame of the env's current state is stored with: {"labels": every goal's ground truth, "captions"}.

    The collection source and the rollout recorder both label through here. grid, vis: the egocentric view
    grid and visibility the frame was drawn from (computed when not given); the topdown view has none.
    """
    u = env.unwrapped
    if view != "topdown" and grid is None:
        grid, vis = u.gen_obs_grid()
    return {"labels": label_goals(u, goals), "captions": frame_captions(u, grid, vis, rng)}
