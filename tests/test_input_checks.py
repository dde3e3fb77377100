"""Bad values and inputs that used to pass silently: out-of-range temperatures and thresholds in the
files a reward model loads, goal ids and frames in the Python API and `vlmr score`, and checkpoints
that do not fit their architecture."""

import json
import math

import numpy as np
import pytest
import torch
from model_fixtures import GOALS, tiny_clip, tiny_reward_model  # noqa: F401
from vlmr.finetune.reward_model import RewardModel, make_spec

from vlmr.core.calibration_file import read_calibration, write_calibration
from vlmr.core.errors import VlmrError

BAD_VALUES = [("temperature", math.nan, "temperature nan must be finite and > 0"),
              ("temperature", math.inf, "temperature inf must be finite and > 0"),
              ("temperature", 0.0, "temperature 0.0 must be finite and > 0"),
              ("threshold", math.nan, r"threshold nan must be in \[0, 1\]"),
              ("threshold", -0.5, r"threshold -0.5 must be in \[0, 1\]"),
              ("threshold", 1.5, r"threshold 1.5 must be in \[0, 1\]"),
              ("threshold", "0.5", "threshold '0.5' is not a number")]


def frames(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved_model(tiny_reward_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("rm") / "rm"
    tiny_reward_model.save(path)
    return path


# ------------------------------------------------------------------------------------------ range checks
@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_calibration_values_out_of_range_are_refused_naming_goal_and_field(saved_model, tmp_path, key, value,
                                                                           message):
    """json reads NaN and Infinity; a hand edit keeps the model id, so only the range check catches these."""
    rm = RewardModel.load(saved_model)
    entries = {g: {"temperature": 0.01, "threshold": 0.5} for g in GOALS}
    entries[GOALS[1]][key] = value
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    assert ("NaN" in (tmp_path / "cal.json").read_text()) == (value != value)
    with pytest.raises(VlmrError, match=rf"cal.json: goal '{GOALS[1]}': {message}; restore the file or refit"):
        RewardModel.load(saved_model, calibration=tmp_path / "cal.json")
    with pytest.raises(VlmrError, match=message):
        read_calibration(tmp_path / "cal.json")  # the pipeline's own check reads it this way
    entries[GOALS[1]][key] = 0.01 if key == "temperature" else 1.0  # edges that are fine
    write_calibration(tmp_path / "cal.json", rm.model_id, entries)
    RewardModel.load(saved_model, calibration=tmp_path / "cal.json")


@pytest.mark.parametrize("key, value, message", BAD_VALUES)
def test_reward_model_json_defaults_out_of_range_are_refused(saved_model, tmp_path, key, value, message):
    import shutil

    from vlmr.finetune.reward_model import reward_model_id

    path = tmp_path / "rm"
    shutil.copytree(saved_model, path)
    spec = json.loads((path / "reward_model.json").read_text())
    (path / "reward_model.json").write_text(json.dumps({**spec, key: value}))
    for load in (RewardModel.load, reward_model_id):
        with pytest.raises(VlmrError, match=rf"reward_model.json: {message} \(the default for every goal"):
            load(path)
    if not isinstance(value, str):  # the Python API, through the spec itself (pydantic reads "0.5" as 0.5)
        with pytest.raises(VlmrError, match=f"key '{key}'"):
            make_spec(arch="vlmr-tiny", goals=GOALS, **{key: value})


def test_set_calibration_refuses_values_out_of_range(tiny_reward_model):
    rm = tiny_reward_model
    before = rm.temperatures.clone(), rm.thresholds.clone()
    with pytest.raises(VlmrError, match=f"goal '{GOALS[2]}': temperature nan must be finite"):
        rm.set_calibration([0.01, 0.01, float("nan")], [0.5] * 3)
    with pytest.raises(VlmrError, match=r"every goal\)': threshold -1.0 must be in \[0, 1\]"):
        rm.set_calibration([0.01] * 3, -1.0)
    with pytest.raises(VlmrError, match="got 2 threshold values for 3 goals"):
        rm.set_calibration([0.01] * 3, [0.5] * 2)
    assert torch.equal(rm.temperatures, before[0]) and torch.equal(rm.thresholds, before[1])


# ------------------------------------------------------------------------------------------ input checks
@pytest.mark.parametrize("ids", [[0.0, 1.7], np.array([0.0, 1.7]), torch.tensor([0.0, 1.0]), [True, False],
                                 [0, 1.0]])
def test_goal_ids_must_be_integers(tiny_reward_model, ids):
    """Float ids used to be truncated ([0.0, 1.7] scored goal 1 for the second frame), bools taken as 0/1."""
    for score in (tiny_reward_model.probs, tiny_reward_model.reward):
        with pytest.raises(VlmrError, match=r"is neither a goal sentence nor an integer index"):
            score(frames(2), ids)


def test_integer_and_sentence_goal_ids_agree(tiny_reward_model):
    rm, f = tiny_reward_model, frames(2, seed=3)
    expected = rm.probs(f, [GOALS[0], GOALS[2]])
    for ids in ([0, 2], np.array([0, 2], dtype=np.int32), torch.tensor([0, 2]), [np.int64(0), np.int64(2)],
                np.array([GOALS[0], GOALS[2]]), torch.tensor([0, 2], dtype=torch.uint8)):
        assert torch.equal(rm.probs(f, ids), expected)


def test_a_single_goal_is_one_goal_not_a_sequence(tiny_reward_model):
    """A string goal was iterated by character: "goal 'g' is not in the goal set"."""
    rm, f = tiny_reward_model, frames(1, seed=4)
    assert torch.equal(rm.probs(f, GOALS[1]), rm.probs(f, [GOALS[1]]))
    assert torch.equal(rm.reward(f, 1), rm.reward(f, [1]))
    with pytest.raises(VlmrError, match=r"got 3 frames but 1 goal ids; .*\[goal\] \* len\(frames\)"):
        rm.probs(frames(3), GOALS[1])


def test_a_single_frame_needs_a_batch_axis(tiny_reward_model):
    """An H x W x 3 frame used to be read as H frames: "got 64 frames but 1 goal ids"."""
    for frame in (frames(1)[0], torch.from_numpy(frames(1)[0])):
        for score in (tiny_reward_model.probs, tiny_reward_model.reward):
            with pytest.raises(VlmrError, match=r"got a single frame of shape \(64, 64, 3\) \(use frames\[None\]"):
                score(frame, [0])


def test_frames_smaller_than_a_patch_warn(tiny_reward_model):
    import warnings

    with pytest.warns(UserWarning, match=r"frames are 4 x 6 px, smaller than the model's 8 px patch: they are "
                                         r"upscaled to 64 x 64 px"):
        tiny_reward_model.probs(np.zeros((2, 4, 6, 3), np.uint8), [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # frames of at least one patch: no warning
        tiny_reward_model.probs(frames(1, size=8), [0])
        tiny_reward_model.all_probs(frames(1, size=64))


def write_png16(path, array):
    """A 16-bit PNG (greyscale H x W or RGB H x W x 3) written by hand: PIL cannot write 16-bit RGB."""
    import struct
    import zlib

    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if array.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_score_warns_on_16_bit_images_and_scales_them_down(tiny_reward_model, tmp_path, capsys):
    from PIL import Image

    from vlmr.cli import main
    from vlmr.commands import read_image

    write_png16(tmp_path / "grey.png", np.full((16, 16), 40000))
    write_png16(tmp_path / "rgb.png", np.stack([np.full((16, 16), v) for v in (0, 40000, 65535)], -1))
    with pytest.warns(UserWarning, match=r"grey.png: 16 bits per channel; vlmr scores 8-bit RGB"):
        grey = read_image(tmp_path / "grey.png")
    assert grey.dtype == np.uint8 and grey.shape == (16, 16, 3) and (grey == 156).all()  # not clipped to 255
    with pytest.warns(UserWarning, match=r"rgb.png: 16 bits per channel"):
        rgb = read_image(tmp_path / "rgb.png")
    assert rgb[0, 0].tolist() == [0, 156, 255]
    Image.fromarray(frames(1)[0]).save(tmp_path / "rgb8.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "rgb8.png")
    tiny_reward_model.save(tmp_path / "rm")
    for flag in ("--batch-size", "--limit"):
        assert main(["score", "--model", str(tmp_path / "rm"), flag, "0", str(tmp_path / "rgb8.png")]) == 2
        assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ mismatched checkpoints
@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_clip, tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip[0].state_dict().items()}, str(path))
    return path


def test_checkpoint_for_another_architecture_names_both_and_the_one_it_fits(tiny_checkpoint, tmp_path):
    """Used to end in open_clip's `AssertionError: text pos_embed width changed!`."""
    from safetensors.torch import load_file
    from vlmr.finetune.models import create_clip

    legacy = tmp_path / "tiny.pt"  # torch.save'd, wrapped and prefixed as DDP training scripts leave them
    torch.save({"state_dict": {f"module.{k}": v for k, v in load_file(str(tiny_checkpoint)).items()}}, legacy)
    for path in (tiny_checkpoint, legacy):
        with pytest.raises(VlmrError, match=rf"^checkpoint {path} does not fit architecture vlmr-small: embedding "
                                            r"size 64 in the checkpoint, 192 in vlmr-small; vision width 128 in the "
                                            r"checkpoint, 256 in vlmr-small; .*; its shapes match architecture "
                                            r"vlmr-tiny: use that one, or a checkpoint made for vlmr-small$"):
            create_clip("vlmr-small", str(path))
    create_clip("vlmr-tiny", str(legacy))  # the architecture it was made for loads it


def test_reward_model_dir_whose_arch_was_changed(tiny_reward_model, tmp_path):
    tiny_reward_model.save(tmp_path / "rm")  # random init: full weights in the directory
    spec = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps({**spec, "arch": "ViT-B-32"}))
    with pytest.raises(VlmrError, match=r"does not fit architecture ViT-B-32: .*vision layers 3 in the checkpoint, "
                                        r"12 in ViT-B-32; its shapes match architecture vlmr-tiny"):
        RewardModel.load(tmp_path / "rm")


def test_checkpoint_of_no_known_architecture_and_unreadable_checkpoints(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file
    from vlmr.finetune.models import create_clip

    state = load_file(str(tiny_checkpoint))
    state["token_embedding.weight"] = state["token_embedding.weight"][:1000].contiguous()
    save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(VlmrError, match=r"does not fit architecture vlmr-tiny: vocabulary size 1000 in the "
                                        r"checkpoint, 49408 in vlmr-tiny; no known architecture has its shapes"):
        create_clip("vlmr-tiny", str(tmp_path / "odd.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for name in ("cut.safetensors", "junk.pt"):
        with pytest.raises(VlmrError, match=rf"checkpoint .*{name} cannot be read .*; it is corrupt, truncated"):
            create_clip("vlmr-tiny", str(tmp_path / name))
