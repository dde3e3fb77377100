"""Training-frame augmentations: they keep every label true, keep the whole frame in view, and touch training only."""

import numpy as np
import pytest
import torch
from vlmr.finetune.augment import AugmentSection, FrameAugment
from vlmr.finetune.train import FinetuneConfig

from vlmr.core.config import load_config
from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError

# minigrid's object colours; grey goals are left out below (grey is also the grid lines)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (112, 39, 195),
           "yellow": (255, 255, 0)}
NO_COLOUR = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "p": 1.0}  # every frame augmented


def colour_pixels(frames: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    """Pixels within tol of rgb in every channel, counted per frame."""
    return (np.abs(frames.astype(np.int16) - np.asarray(rgb, np.int16)).max(-1) <= tol).sum(axis=(1, 2))


def front_cell_colour(frame: np.ndarray) -> np.ndarray:
    """The most frequent saturated colour in the cell in front of the agent (minigrid's 64 px egocentric view)."""
    cell = frame[45:54, 27:36].reshape(-1, 3).astype(int)
    vivid = cell[cell.max(1) - cell.min(1) > 40]
    colours, counts = np.unique(vivid, axis=0, return_counts=True)
    return colours[counts.argmax()]


def test_goal_objects_stay_in_view_of_every_augmented_positive_frame(babyai_dataset):
    """The labeller's answer holds on the augmented frame: the goal object is still drawn, about as large."""
    arrays = load_split_arrays(babyai_dataset, "train")
    goals = read_manifest(babyai_dataset)["goals"]
    rows = [i for i, g in enumerate(arrays.own_goal) if g >= 0 and arrays.labels[i, g] and "grey" not in goals[g]]
    assert len(rows) >= 5
    frames = arrays.frames[rows]
    colours = [front_cell_colour(f) for f in frames]
    aug = FrameAugment(AugmentSection(resize=(0.75, 3.5), zoom_out=0.85, **NO_COLOUR), (64, 64))  # geometry only
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        out = aug(torch.from_numpy(frames), gen).numpy()
        for k, rgb in enumerate(colours):
            # a zoom-out to 0.85 keeps 72% of the area; resampling blurs a thin key's edges, hence the wider tolerance
            assert colour_pixels(out[k:k + 1], rgb, tol=60)[0] >= 0.3 * colour_pixels(frames[k:k + 1], rgb)[0] > 0


def corner_frame(size: int = 64) -> np.ndarray:
    """A grey frame with a differently coloured 8 px object in each corner: any crop or zoom-in cuts one."""
    f = np.full((size, size, 3), 100, np.uint8)
    for (r, c), rgb in zip([(0, 0), (0, size - 8), (size - 8, 0), (size - 8, size - 8)], COLOURS.values()):
        f[r:r + 8, c:c + 8] = rgb
    return f


@pytest.mark.parametrize("section", [
    {"resize": (1.0, 1.0), "zoom_out": 0.7},  # scale jitter alone: the smallest zoom-out
    {"resize": (0.5, 0.5), "zoom_out": 1.0},  # resize jitter alone: down to half and back up
    {"resize": (4.0, 4.0), "zoom_out": 1.0},  # up and back down
    {"resize": (0.5, 4.0), "zoom_out": 0.7, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1},
])
def test_scale_and_resize_jitter_keep_the_whole_frame(section):
    frame = corner_frame()
    aug = FrameAugment(AugmentSection(**({**NO_COLOUR, **section})), (64, 64))
    out = aug(torch.from_numpy(np.repeat(frame[None], 32, axis=0)), torch.Generator().manual_seed(1)).numpy()
    for rgb in list(COLOURS.values())[:4]:  # every corner object is still in every frame (blurred, jittered)
        assert (colour_pixels(out, rgb, tol=70) >= 9).all()
    if section["zoom_out"] < 1 and "brightness" not in section:  # a zoom-out pads in the frame's border colour (grey), not black, not smeared objects
        padded = [any((edge == 100).all() for edge in (o[0], o[-1], o[:, 0], o[:, -1])) for o in out]
        assert sum(padded) >= 28  # all but the few drawn at a scale that rounds to the full side
        assert not (out == out[:1]).all()  # each frame gets its own draw


def test_zoom_out_draws_the_frame_smaller_and_pads_rather_than_crops():
    frame = corner_frame()
    aug = FrameAugment(AugmentSection(resize=(1.0, 1.0), zoom_out=0.75, **NO_COLOUR), (64, 64))
    out = aug(torch.from_numpy(np.repeat(frame[None], 16, axis=0)), torch.Generator().manual_seed(2)).numpy()
    red = colour_pixels(out, COLOURS["red"], tol=40)
    assert (red < 64).any() and (red <= 64).all()  # the red object shrinks (often), never grows


def test_frames_come_out_at_the_model_input_size_and_p_zero_leaves_them_alone():
    frames = torch.from_numpy(np.repeat(corner_frame(96)[None], 4, axis=0))
    out = FrameAugment(AugmentSection(), (64, 64))(frames)
    assert out.shape == (4, 64, 64, 3) and out.dtype == torch.uint8
    same = torch.from_numpy(np.repeat(corner_frame()[None], 4, axis=0))
    assert torch.equal(FrameAugment(AugmentSection(p=0.0), (64, 64))(same), same)


def test_colour_jitter_keeps_each_colour_the_colour_it_is():
    frames = np.stack([np.full((64, 64, 3), rgb, np.uint8) for rgb in COLOURS.values()])
    aug = FrameAugment(AugmentSection(p=1.0, resize=(1.0, 1.0), zoom_out=1.0, brightness=0.5, contrast=0.5,
                                      saturation=0.5), (64, 64))
    for seed in range(10):
        out = aug(torch.from_numpy(frames), torch.Generator().manual_seed(seed)).numpy().astype(int)
        for k, rgb in enumerate(COLOURS.values()):  # the strongest channel stays the strongest: no hue change
            assert np.argmax(out[k, 0, 0]) == np.argmax(rgb)


@pytest.mark.parametrize("override, key", [
    ("augment.zoom_out=1.2", "augment.zoom_out"), ("augment.brightness=0.9", "augment.brightness"),
    ("augment.resize=[2.0, 1.0]", "augment.resize"), ("augment.p=2", "augment.p"),
    ("augment.hue=0.1", "augment.hue"),
])
def test_bad_augment_values_name_the_key(override, key):
    with pytest.raises(VlmrError, match=key.replace(".", r"\.")):
        load_config(FinetuneConfig, "babyai_lora", [override])


def test_on_for_domain_adaptation_off_for_base_pretraining():
    for name in ("babyai_lora", "crafter_lora"):
        assert load_config(FinetuneConfig, name).augment is not None
    assert load_config(FinetuneConfig, "base_shapes_full").augment is None
    assert load_config(FinetuneConfig, "babyai_lora", ["augment=null"]).augment is None


def test_only_the_training_step_sees_augmented_frames_and_labels_pass_through(babyai_dataset, monkeypatch):
    from vlmr.finetune.datamodule import ShardDataModule
    from vlmr.finetune.lit_module import ClipFinetuneModule

    dm = ShardDataModule(babyai_dataset, batch_size=16)
    batch = next(iter(dm.val_dataloader()))
    module = ClipFinetuneModule(dm.goals, model={"arch": "vlmr-tiny"}, lora={"r": 2}, loss={}, optim={},
                                max_steps=1, augment={"zoom_out": 0.8})
    seen = []

    class Stop(Exception):
        pass

    def shared_step(b, stage):
        seen.append((stage, b))
        raise Stop  # the input is all this test looks at

    monkeypatch.setattr(module, "shared_step", shared_step)
    with pytest.raises(Stop):
        module.training_step(batch, 0)
    with pytest.raises(Stop):
        module.validation_step(batch, 0)
    (stage, trained), (val_stage, validated) = seen
    assert stage == "train" and not torch.equal(trained["frames"], batch["frames"])
    for key in ("labels", "own_goal", "captions", "keys"):  # labels, missions and captions: the batch's own objects
        assert trained[key] is batch[key]
    assert val_stage == "val" and validated is batch  # validation: the batch exactly as loaded
