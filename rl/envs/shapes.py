"""The shapes family: a generic captioned corpus of coloured shapes, for pretraining the offline demo's base CLIP.

    vlmr collect --source shapes                  # = vlmr collect configs/data/shapes.yaml
    frame, objects, captions = render_scene(np.random.default_rng(0), 64)

Shapes (circle/ball, square, triangle, key, box, door) in the minigrid colours
are drawn at random positions, sizes and backgrounds. Captions name colour,
shape, size, position in the image ("at the top left", "at the bottom
centre") and relations ("a red circle above a blue square"). A share of
scenes is a tiled floor seen from a viewer at the bottom centre (a triangle),
with an object in the cell just in front ("a red ball right in front of you,
at the bottom centre") or held ("the agent is holding a red ball"): spatial
language that a web-scale CLIP would bring and a colour-only corpus lacks.
It is never rendered from BabyAI or Crafter.

Every frame is labelled for the goal set "a {colour} {shape}": 1 when an
object of that colour and shape is in the frame. Shapes is data-only: the env
side of the family interface (make_env, check_env, render_frame, action_names, state_meta)
raises a VlmrError, and a scene's state for label_goals is its list of objects.
"""

from __future__ import annotations

import numpy as np
from vlmr.rl.envs import no_rl_env

from vlmr.core.errors import VlmrError

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (112, 39, 195),
          "yellow": (255, 255, 0), "grey": (100, 100, 100)}
SHAPES = ("circle", "square", "triangle", "key", "box", "door")
NAMES = {"circle": ("circle", "ball", "disc"), "square": ("square", "block"), "triangle": ("triangle",),
         "key": ("key",), "box": ("box", "crate"), "door": ("door",)}
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


NAME = "shapes"
ENV_ID_PREFIXES = ()  # no RL env


def goal_set(env_id: str | None = None, env_kwargs: dict | None = None) -> list[str]:
    """Every "a {colour} {shape}" goal (there are no env ids, so env_id and env_kwargs change nothing)."""
    return [f"a {c} {s}" for s in SHAPES for c in COLORS]


def check_env(env_id: str, obs_mode: str | None = None, env_kwargs: dict | None = None) -> None:
    raise no_rl_env(NAME, f"env {env_id!r}")


def make_env(env_id: str, image_size: int = 64, obs_mode: str | None = None, env_kwargs: dict | None = None,
             memo_render: bool = False):
    raise no_rl_env(NAME, f"env {env_id!r}")


def render_frame(env, image_size: int = 64) -> np.ndarray:
    raise no_rl_env(NAME, "render_frame")


def action_names(env_id: str | None = None) -> list[str]:
    raise no_rl_env(NAME, "action_names")


def state_meta(env, goals: list[str], rng) -> dict:
    raise no_rl_env(NAME, "state_meta")


def canonical_mission(mission: str) -> str | None:
    return mission if mission in goal_set() else None


def position_name(cx: float, cy: float, size: int) -> str:
    row, col = _ROWS[min(2, int(3 * cy / size))], _COLS[min(2, int(3 * cx / size))]
    if row == "middle":
        return "centre" if col == "centre" else col
    return f"{row} {col}"


def at(pos: str) -> str:
    """'left' -> 'on the left', 'centre' -> 'in the centre', 'top left' -> 'at the top left'."""
    return {"left": "on the left", "right": "on the right", "centre": "in the centre"}.get(pos, f"at the {pos}")


def _jitter(rng, rgb) -> tuple[int, ...]:
    return tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in rgb)


def draw_shape(draw, shape: str, box: tuple[float, float, float, float], fill, rng) -> None:
    """One glyph in box (x0, y0, x1, y1), shaped like minigrid's objects where one exists."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    lw = max(1, int(min(w, h) / 7))
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        up = rng.random() < 0.7
        pts = [(x0 + w / 2, y0), (x0, y1), (x1, y1)] if up else [(x0, y0 + h / 2), (x1, y0), (x1, y1)]
        draw.polygon(pts, fill=fill)
    elif shape == "key":  # ring on top, shaft, two teeth
        r = w * 0.22
        cx = x0 + w * 0.5
        draw.ellipse((cx - r, y0, cx + r, y0 + 2 * r), outline=fill, width=lw)
        draw.rectangle((cx - lw / 2, y0 + 2 * r, cx + lw / 2, y1), fill=fill)
        draw.rectangle((cx - w * 0.22, y1 - h * 0.25, cx, y1 - h * 0.25 + lw), fill=fill)
        draw.rectangle((cx - w * 0.22, y1 - lw, cx, y1), fill=fill)
    elif shape == "box":  # outline with a lid line, like minigrid's box
        draw.rectangle(box, outline=fill, width=lw)
        draw.rectangle((x0, y0 + h / 2 - lw / 2, x1, y0 + h / 2 + lw / 2), fill=fill)
    elif shape == "door":  # closed (dark inside, handle) or open (thin frame at one side)
        style = rng.integers(3)
        if style == 0:
            draw.rectangle(box, fill=fill)
            dark = tuple(int(0.45 * v) for v in fill)
            draw.rectangle((x0 + lw, y0 + lw, x1 - lw, y1 - lw), fill=dark)
            draw.ellipse((x1 - 3 * lw, y0 + h / 2 - lw, x1 - lw, y0 + h / 2 + lw), fill=fill)
        elif style == 1:
            draw.rectangle(box, outline=fill, width=lw)
            draw.rectangle((x0 + 2 * lw, y0 + 2 * lw, x1 - 2 * lw, y1 - 2 * lw), outline=fill, width=lw)
        else:
            draw.rectangle((x0, y0, x1, y1), outline=fill, width=lw)
            draw.rectangle((x0 + w * 0.52, y0 + h * 0.45, x0 + w * 0.75, y0 + h * 0.55), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _background(rng, size: int, tiles: int | None = None):
    from PIL import Image, ImageDraw

    kind = "grid" if tiles else rng.choice(["dark", "light", "grid", "noise", "split"])
    if kind == "light":
        base = tuple(int(v) for v in rng.integers(170, 256, 3))
    else:
        base = tuple(int(v) for v in rng.integers(0, 60, 3))
    img = Image.new("RGB", (size, size), base)
    if kind == "noise":
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        img = Image.fromarray(arr.astype(np.uint8), "RGB")
    elif kind == "split":
        other = tuple(int(v) for v in rng.integers(0, 60, 3))
        ImageDraw.Draw(img).rectangle((0, size // 2, size, size), fill=other)
    elif kind == "grid":
        n = tiles or int(rng.integers(4, 10))
        line = tuple(int(v) for v in rng.integers(70, 110, 3))
        d = ImageDraw.Draw(img)
        for i in range(1, n):
            p = round(i * size / n)
            d.line((p, 0, p, size), fill=line)
            d.line((0, p, size, p), fill=line)
    return img


def _sizeword(rel: float) -> str:
    return "small " if rel < 0.17 else ("large " if rel > 0.3 else "")


def render_scene(rng: np.random.Generator, size: int = 64, max_objects: int = 3, viewer_prob: float = 0.35
                 ) -> tuple[np.ndarray, list[dict], list[str]]:
    """One frame, the objects in it ({color, shape, name, cx, cy, rel}) and its captions (canonical first)."""
    from PIL import ImageDraw

    if rng.random() < viewer_prob:
        return _viewer_scene(rng, size)
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            rel = float(rng.uniform(0.12, 0.38))
            half = rel * size / 2
            cx, cy = rng.uniform(half, size - half, 2)
            if all(abs(cx - o["cx"]) > half + o["half"] or abs(cy - o["cy"]) > half + o["half"] for o in objects):
                break
        else:
            continue
        color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        draw_shape(draw, shape, (cx - half, cy - half, cx + half, cy + half), _jitter(rng, COLORS[color]), rng)
        objects.append({"color": color, "shape": shape, "name": str(rng.choice(NAMES[shape])), "cx": float(cx),
                        "cy": float(cy), "half": half, "rel": rel, "pos": position_name(cx, cy, size)})
    return np.asarray(img), objects, _captions(objects, rng)


def _viewer_scene(rng, size: int):
    """A 7 x 7 tiled floor seen from the bottom centre, where a viewer (a triangle) stands."""
    from PIL import ImageDraw

    n = 7
    img = _background(rng, size, tiles=n)
    draw = ImageDraw.Draw(img)
    t = size / n

    def cell(col, row, pad=0.15):
        return (col * t + pad * t, row * t + pad * t, (col + 1) * t - pad * t, (row + 1) * t - pad * t)

    objects: list[dict] = []
    taken = {(3, 6)}
    held = rng.random() < 0.25
    color, shape = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES[:1] + SHAPES[3:]))
    main_cell = (3, 6) if held else (3, 5)
    taken.add(main_cell)
    name = str(rng.choice(NAMES[shape]))
    draw_shape(draw, shape, cell(*main_cell, pad=0.0 if shape == "door" else 0.15), _jitter(rng, COLORS[color]), rng)
    objects.append({"color": color, "shape": shape, "name": name, "held": held, "front": not held,
                    "cx": (main_cell[0] + 0.5) * t, "cy": (main_cell[1] + 0.5) * t, "rel": 1 / n,
                    "pos": "bottom centre"})
    for _ in range(int(rng.integers(0, 3))):
        c = (int(rng.integers(0, n)), int(rng.integers(0, 5)))
        if c in taken:
            continue
        taken.add(c)
        oc, os_ = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES[:1] + SHAPES[3:]))
        draw_shape(draw, os_, cell(*c), _jitter(rng, COLORS[oc]), rng)
        cx, cy = (c[0] + 0.5) * t, (c[1] + 0.5) * t
        objects.append({"color": oc, "shape": os_, "name": str(rng.choice(NAMES[os_])), "cx": cx, "cy": cy,
                        "rel": 1 / n, "pos": position_name(cx, cy, size)})
    viewer = str(rng.choice(["red", "red", "purple", "blue"]))
    pad = 0.3 if held else 0.15
    draw_shape(draw, "triangle", cell(3, 6, pad), COLORS[viewer], np.random.default_rng(0))  # pointing up
    objects.append({"color": viewer, "shape": "triangle", "name": "triangle", "viewer": True, "cx": 3.5 * t,
                    "cy": 6.5 * t, "rel": 1 / n, "pos": "bottom centre"})
    c, nm = color, name
    if held:
        caps = [f"the agent is holding a {c} {nm}", f"a {c} {nm} in your hands, at the bottom centre",
                f"the agent carries the {c} {nm}", f"you are holding a {c} {nm}"]
    else:
        caps = [f"a {c} {nm} right in front of you, at the bottom centre", f"the agent is next to the {c} {nm}",
                f"a {c} {nm} right in front of the agent", f"the {c} {nm} is directly ahead, at the bottom centre",
                f"you face a {c} {nm}"]
    others = [o for o in objects[1:] if not o.get("viewer")]
    extra = [f"a {o['color']} {o['name']} {at(o['pos'])}" for o in others]
    rng.shuffle(caps_rest := caps[1:] + extra)
    return np.asarray(img), objects, [caps[0], *caps_rest]


def _captions(objects: list[dict], rng) -> list[str]:
    if not objects:
        return ["an empty picture", "nothing but the background"]
    desc = [f"a {_sizeword(o['rel'])}{o['color']} {o['name']} {at(o['pos'])}" for o in objects]
    first = " and ".join(desc)
    caps = [f"a {objects[0]['color']} {objects[0]['name']}"] if len(objects) == 1 else []
    for o in objects:
        caps += [f"there is a {o['color']} {o['name']} {at(o['pos'])} of the image",
                 f"{o['pos']}: a {o['color']} {o['name']}"]
    if len(objects) >= 2:
        a, b = objects[0], objects[1]
        dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
        an, bn = f"a {a['color']} {a['name']}", f"a {b['color']} {b['name']}"
        if abs(dy) > abs(dx):
            caps += [f"{an} above {bn}" if dy > 0 else f"{an} below {bn}",
                     f"{bn} below {an}" if dy > 0 else f"{bn} above {an}"]
        else:
            caps += [f"{an} to the left of {bn}" if dx > 0 else f"{an} to the right of {bn}",
                     f"{bn} to the right of {an}" if dx > 0 else f"{bn} to the left of {an}"]
        caps.append(" and ".join(f"a {o['color']} {o['name']}" for o in objects))
    caps = [c for c in caps if c and c != first]
    rng.shuffle(caps)
    return [first, *caps]


def label_goals(objects: list[dict], goals: list[str]) -> dict[str, int]:
    """{goal: 1 when an object of its colour and shape is in the scene}."""
    present = {f"a {o['color']} {o['shape']}" for o in objects}
    return {g: int(g in present) for g in goals}


class ShapesSource:
    """Collection source: one scene per episode, seeded by its env seed."""

    name, view = "shapes", None

    def __init__(self, image_size: int = 64, max_objects: int = 3, viewer_prob: float = 0.35,
                 goals: list[str] | None = None):
        self.image_size, self.max_objects, self.viewer_prob = image_size, max_objects, viewer_prob
        self.goals = list(goals) if goals else goal_set()
        unknown = [g for g in self.goals if g not in goal_set()]
        if unknown:
            raise VlmrError(f"unknown shapes goals {unknown[:3]}; shapes goals are 'a {{colour}} {{shape}}' with "
                            f"colours {', '.join(COLORS)} and shapes {', '.join(SHAPES)}")

    def episode(self, env_seed: int):
        rng = np.random.default_rng(env_seed)
        frame, objects, captions = render_scene(rng, self.image_size, self.max_objects, self.viewer_prob)
        yield frame, {"env": "shapes", "mission": None, "labels": label_goals(objects, self.goals),
                      "captions": captions}


def make_source(cfg) -> ShapesSource:
    return ShapesSource(cfg.image_size, cfg.shapes_max_objects, cfg.shapes_viewer_prob, cfg.goals)
