"""Batched tensor preprocessing must match open_clip's own PIL pipeline."""

import numpy as np
import open_clip
import pytest
from model_fixtures import tiny_clip  # noqa: F401
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from vlmr.finetune.models import image_preprocess_cfg
from vlmr.finetune.preprocess import preprocess_frames

from vlmr.core.errors import VlmrError

# One uint8 level of difference after resampling, divided by the smallest CLIP std (0.261),
# is 0.015; PIL and torchvision round bicubic weights differently by up to two levels.
MAX_ABS_TOL = 2.0 / 255 / 0.26
MEAN_ABS_TOL = 1e-3


def blocky_image(rng, h, w):
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.NEAREST))


@pytest.mark.parametrize("shape", [(64, 64), (80, 100), (256, 256), (50, 70), (63, 63), (200, 120)])
def test_matches_open_clip_pil_transform(tiny_clip, shape):
    model, _ = tiny_clip
    cfg = image_preprocess_cfg(model)
    reference = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)
    rng = np.random.default_rng(sum(shape))
    frames = np.stack([blocky_image(rng, *shape) for _ in range(3)])
    ours = preprocess_frames(frames, cfg["size"], cfg["mean"], cfg["std"], cfg["interpolation"])
    for i in range(3):
        diff = (reference(Image.fromarray(frames[i])) - ours[i]).abs()
        assert diff.max().item() <= MAX_ABS_TOL
        assert diff.mean().item() <= MEAN_ABS_TOL
    if shape == (64, 64):  # frames already at the model size are not resampled: exact
        assert (reference(Image.fromarray(frames[0])) - ours[0]).abs().max().item() < 1e-6


@pytest.mark.parametrize("frames, message", [
    (np.zeros((64, 64, 3), np.uint8), "single frame"),
    (np.zeros((2, 64, 64, 4), np.uint8), "alpha"),
    (np.zeros((2, 3, 64, 64), np.uint8), "channels-first"),
    (np.zeros((2, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((0, 64, 64, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy array or torch tensor"),
])
def test_bad_frames_get_clear_errors(frames, message):
    with pytest.raises(VlmrError, match=message):
        preprocess_frames(frames, (64, 64), (0.5,) * 3, (0.5,) * 3)
