"""Batched image preprocessing on the device, numerically matching open_clip's PIL pipeline.

open_clip's eval transform is: PIL bicubic resize of the shortest side (output
uint8), center crop, to float in [0, 1], normalize. We do the same on a whole
uint8 batch: torchvision's antialiased bicubic resize on uint8 tensors rounds
back to uint8 like PIL does, so the two agree to about one intensity level.
Frames already at the model's size skip the resize and match exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from vlmr.core.errors import VlmrError

_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                  "nearest": InterpolationMode.NEAREST}


def check_frames(frames) -> None:
    """Refuse anything but a batch of N x H x W x 3 uint8 frames (numpy or torch), each with a clear error.

    Callers that pair frames with goals check this first: a single H x W x 3 frame would otherwise be
    taken as H frames and reported as a frame/goal count mismatch."""
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        raise VlmrError(f"frames must be a numpy array or torch tensor of shape N x H x W x 3, got {type(frames).__name__}")
    if frames.ndim == 3 and frames.shape[-1] in (3, 4):
        raise VlmrError(f"frames must be a batch N x H x W x 3; got a single frame of shape {tuple(frames.shape)} "
                        "(use frames[None] for a batch of one)")
    if frames.ndim != 4:
        raise VlmrError(f"frames must have shape N x H x W x 3, got shape {tuple(frames.shape)}")
    if frames.shape[-1] != 3:
        hint = " (RGBA: drop the alpha channel with frames[..., :3])" if frames.shape[-1] == 4 else ""
        hint = hint or (" (channels-first? use frames.permute(0, 2, 3, 1))" if frames.shape[1] == 3 else "")
        raise VlmrError(f"frames must have 3 colour channels last (N x H x W x 3), got shape {tuple(frames.shape)}{hint}")
    if str(frames.dtype).removeprefix("torch.") != "uint8":
        hint = (" (16-bit images: keep the top 8 bits with (x >> 8).astype('uint8'))"
                if str(frames.dtype).endswith("uint16") else
                "; convert float images with (x * 255).round().clip(0, 255).astype('uint8')")
        raise VlmrError(f"frames must be uint8 RGB in [0, 255], got dtype {frames.dtype}{hint}")
    if frames.shape[0] == 0:
        raise VlmrError("frames is an empty batch (N = 0)")


def as_uint8_batch(frames, device: str | torch.device = "cpu") -> torch.Tensor:
    """Validate N x H x W x 3 uint8 frames (numpy or torch) and return them as an N x 3 x H x W tensor."""
    check_frames(frames)
    if isinstance(frames, np.ndarray):
        if not frames.flags.writeable:  # torch refuses to wrap read-only memory without a copy
            frames = frames.copy()
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2)


def warn_if_smaller_than_patch(height: int, width: int, patch: int | None, size: tuple[int, int]) -> None:
    """A frame smaller than one patch is upscaled to the model's size and scored without a word otherwise;
    its score says next to nothing about the frame."""
    if patch and min(height, width) < patch:
        warnings.warn(f"frames are {height} x {width} px, smaller than the model's {patch} px patch: they are "
                      f"upscaled to {size[0]} x {size[1]} px and hold too little detail for a meaningful score; "
                      f"render frames at the model's input size", UserWarning, stacklevel=3)


def preprocess_frames(frames, size: tuple[int, int], mean, std, interpolation: str = "bicubic",
                      device: str | torch.device = "cpu", patch: int | None = None) -> torch.Tensor:
    """uint8 N x H x W x 3 frames -> normalized float N x 3 x size tensor, the model's input.
    patch: the model's patch size; smaller frames get a warning."""
    x = as_uint8_batch(frames, device)
    warn_if_smaller_than_patch(x.shape[-2], x.shape[-1], patch, size)
    if tuple(x.shape[-2:]) != tuple(size):
        if size[0] == size[1]:
            x = TF.resize(x, [size[0]], interpolation=_INTERPOLATION[interpolation], antialias=True)
        else:  # open_clip's ResizeKeepRatio: the shortest edge fits the matching target edge
            scale = max(size[0] / x.shape[-2], size[1] / x.shape[-1])
            new = [round(x.shape[-2] * scale), round(x.shape[-1] * scale)]
            x = TF.resize(x, new, interpolation=_INTERPOLATION[interpolation], antialias=True)
        x = TF.center_crop(x, list(size))
    # (x / 255 - mean) / std as one in-place affine map: at 64 px the model is so cheap that every extra
    # full-size temporary shows up in frames/s
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=x.device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device).view(1, 3, 1, 1)
    return x.float().mul_(scale).add_(shift)
