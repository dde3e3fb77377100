"""Frame augmentations for fine-tuning that keep every label true (the `augment` section of a finetune config).

    aug = FrameAugment(AugmentSection(), size=(64, 64))
    frames = aug(batch["frames"])   # uint8 N x H x W x 3 in, uint8 N x 64 x 64 x 3 out, each frame drawn anew

A reward model meets frames drawn at sizes other than its training data's, so training frames are
jittered the ways such frames differ, with torchvision's v2 functional ops. For BabyAI the loss is in
the layout, not the blur: minigrid's 64 px frame is 63 px of cells plus a 1 px pad, a 224 px frame's
cells fill it, and stretching the 63 px to 64 costs the demo's adapted model as much AUROC as the
224 px render itself (0.95 against 1.00), while resampling the 64 px frame up and down costs nothing.

- resize jitter: resample the frame to a random side and back to the model's input, antialiased,
  which is what a frame drawn at another size and resized looks like;
- scale jitter: draw the frame's content (the frame without a constant-colour border strip, such as
  the 1 px pad of minigrid's 64 px frames: it carries nothing) at zoom_out-100% of the input side and pad
  the rest, centred, in the frame's border colour. Scale 1 is the content filling the frame, as
  a frame drawn at a size without padding shows it;
- colour jitter: brightness, contrast and saturation by a few percent.

Labels are never touched: they describe the scene, and every step keeps the whole scene in view.
There are no flips (a goal like "the key on the left" would change meaning), no crops beyond a
constant-colour border and no zoom-in past it (either could cut the goal object out of the frame), and
no hue jitter (goals name colours).
Only the LightningModule's training step calls this; validation sees frames as they are.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from vlmr.core.config import config_dataclass

MAX_COLOUR_JITTER = 0.5  # beyond this a pale colour could pass for grey or white: the colour words would lie
MAX_BORDER = 0.05  # the most of each side treated as a constant-colour border: padding, not a wall seen edge-on


@config_dataclass
class AugmentSection:
    p: float = 0.5  # share of training frames augmented; the others are seen as drawn (resized to the input)
    resize: tuple[float, float] = (0.75, 2.0)  # resize jitter: side drawn log-uniformly from this range (times the
    # model's input side), then resampled back to the input with antialiasing; (1, 1) = off
    zoom_out: float = 0.95  # smallest content scale: each frame's content (without a constant-colour border) is
    # drawn at a scale in [zoom_out, 1] of the input and padded in its border colour, centred; 1 = content
    # always fills the frame
    brightness: float = 0.05  # brightness factor drawn from [1 - x, 1 + x]; 0 = off
    contrast: float = 0.05  # contrast factor drawn from [1 - x, 1 + x]; 0 = off
    saturation: float = 0.05  # saturation factor drawn from [1 - x, 1 + x]; 0 = off (hue is never jittered)

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"augment.p must be in [0, 1], got {self.p}")
        lo, hi = self.resize
        if not 0.25 <= lo <= hi <= 8.0:
            raise ValueError(f"augment.resize must be [min, max] with 0.25 <= min <= max <= 8 (times the model's "
                             f"input side), got {list(self.resize)}")
        if not 0.5 <= self.zoom_out <= 1.0:
            raise ValueError(f"augment.zoom_out must be in [0.5, 1] (a scale above 1 would crop), got {self.zoom_out}")
        for key in ("brightness", "contrast", "saturation"):
            value = getattr(self, key)
            if not 0.0 <= value <= MAX_COLOUR_JITTER:
                raise ValueError(f"augment.{key} must be in [0, {MAX_COLOUR_JITTER}] (larger jitter can change "
                                 f"which colour a goal names), got {value}")


def content_box(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) rows and columns of a C x H x W frame inside its constant-colour border.

    A row or column whose pixels all have one colour carries no content; up to MAX_BORDER of each side
    is trimmed, so a frame's content is never cut, only its padding.
    """
    h, w = x.shape[-2:]
    rows = (x == x[:, :, :1]).all(0).all(1).tolist()  # rows of one colour
    cols = (x == x[:, :1, :]).all(0).all(0).tolist()

    def run(flags, cap):
        n = 0
        while n < cap and flags[n]:
            n += 1
        return n

    cap_h, cap_w = int(h * MAX_BORDER), int(w * MAX_BORDER)
    top, left = run(rows, cap_h), run(cols, cap_w)
    return top, h - run(rows[::-1], cap_h), left, w - run(cols[::-1], cap_w)


def border_colour(x: torch.Tensor, box: tuple[int, int, int, int]) -> list[float]:
    """The colour to pad a C x H x W frame with: its constant-colour border's (its own padding) when it has one,
    else the median colour of its outermost pixels. Never a stretched edge: that would smear an object at the
    edge into the padding and make it look larger."""
    top, bottom, left, right = box
    h, w = x.shape[-2:]
    for inside, at in ((top > 0, (0, 0)), (bottom < h, (h - 1, 0)), (left > 0, (0, 0)), (right < w, (0, w - 1))):
        if inside:
            return x[:, at[0], at[1]].tolist()
    ring = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    return ring.median(dim=1).values.tolist()


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


class FrameAugment:
    """Per-frame random augmentation of uint8 N x H x W x 3 batches to the model's input size (h, w)."""

    def __init__(self, cfg: AugmentSection, size: tuple[int, int], interpolation: str = "bicubic"):
        self.cfg, self.size = cfg, (int(size[0]), int(size[1]))
        self.mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}.get(
            interpolation, InterpolationMode.BICUBIC)

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return TF.resize(x, list(size), interpolation=self.mode, antialias=True)

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Resize to the input: stretched when the aspects differ by a trimmed border at most, else the way the
        model's preprocessing does (shortest side, then centre crop)."""
        h, w = self.size
        if abs(x.shape[-2] * w / (x.shape[-1] * h) - 1.0) <= 2 * MAX_BORDER:
            return self._resize(x, self.size)
        scale = max(h / x.shape[-2], w / x.shape[-1])
        x = self._resize(x, (round(x.shape[-2] * scale), round(x.shape[-1] * scale)))
        return TF.center_crop(x, [h, w])

    def frame(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One float 3 x H x W frame in [0, 255] -> float 3 x h x w in [0, 1], augmented."""
        c, (h, w) = self.cfg, self.size
        top, bottom, left, right = content_box(x)
        fill = border_colour(x, (top, bottom, left, right))
        x = x[:, top:bottom, left:right]
        lo, hi = c.resize
        if hi > lo or lo != 1.0:  # draw the frame at another size: its side, log-uniform between the bounds
            factor = math.exp(_uniform(math.log(lo), math.log(hi), generator))
            side = max(4, round(min(h, w) * factor))
            x = TF.resize(x, [side], interpolation=self.mode, antialias=True)  # shorter side; keeps the aspect
        x = self._to_input(x)
        scale = _uniform(c.zoom_out, 1.0, generator)
        inner = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = self._resize(x, inner)
        if inner != (h, w):  # zoom-out: the whole content, smaller, padded with the frame's border colour
            # centred, as a renderer pads a frame whose cells do not fill it: a random offset would also move the
            # cell in front of the agent, which is what BabyAI's goals are about (measured: own-goal AUROC drops)
            top, left = (h - inner[0]) // 2, (w - inner[1]) // 2
            x = TF.pad(x, [left, top, w - inner[1] - left, h - inner[0] - top], fill=fill)
        x = (x / 255.0).clamp_(0.0, 1.0)
        for key, adjust in (("brightness", TF.adjust_brightness), ("contrast", TF.adjust_contrast),
                            ("saturation", TF.adjust_saturation)):
            amount = getattr(c, key)
            if amount > 0:
                x = adjust(x, _uniform(1.0 - amount, 1.0 + amount, generator))
        return x

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 N x H x W x 3 -> uint8 N x h x w x 3; a share p of the frames augmented, each with its own draw."""
        x = frames.permute(0, 3, 1, 2).float()
        out = []
        for img in x:
            if float(torch.rand((), generator=generator)) < self.cfg.p:
                out.append(self.frame(img, generator))
            else:
                out.append(self._to_input(img) / 255.0)
        y = torch.stack(out).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).contiguous()
