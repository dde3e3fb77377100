"""The shapes corpus, the shard writer/manifest, and the data module round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vlmr.finetune.datamodule import ShardDataModule
from vlmr.rl.envs import shapes

from vlmr.core.dataset import load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json, sha256_file


def test_manifest_lists_shards_with_hashes_and_counts(shapes_dataset):
    m = read_manifest(shapes_dataset)
    assert m["source"] == "shapes" and m["goals"] == shapes.goal_set() and m["image_size"] == 64
    assert m["splits"]["train"]["samples"] == 384 and m["splits"]["val"]["samples"] == 128
    for entry in m["splits"]["train"]["shards"]:
        assert sha256_file(shapes_dataset / entry["name"]) == entry["sha256"]
    assert sum(m["splits"]["train"]["positives"].values()) > 384  # several objects per scene
    assert not list(shapes_dataset.glob(".*.tmp"))


def test_labels_match_drawn_objects_and_captions():
    rng = np.random.default_rng(3)
    for _ in range(50):
        frame, objects, captions = shapes.render_scene(rng, 64)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        labels = shapes.label_goals(objects, shapes.goal_set())
        assert sum(labels.values()) == len({(o["color"], o["shape"]) for o in objects})
        assert len(captions) >= 2 and len(set(captions)) == len(captions)
        main = objects[0]
        assert main["color"] in captions[0] and main["name"] in captions[0]


def test_viewer_scenes_teach_in_front_language():
    rng = np.random.default_rng(0)
    caps = [shapes.render_scene(rng, 64, viewer_prob=1.0)[2] for _ in range(20)]
    assert any("right in front of you, at the bottom centre" in c[0] for c in caps)
    assert any("holding" in c[0] for c in caps)


def test_position_names():
    assert shapes.position_name(5, 5, 64) == "top left"
    assert shapes.position_name(32, 60, 64) == "bottom centre"
    assert shapes.position_name(32, 32, 64) == "centre"
    assert shapes.at("left") == "on the left"


def test_datamodule_round_trip(shapes_dataset):
    dm = ShardDataModule(shapes_dataset, batch_size=50, shuffle_buffer=100)
    assert dm.goals == shapes.goal_set() and dm.image_size == 64
    arrays = load_split_arrays(shapes_dataset, "val")
    batches = list(dm.val_dataloader())
    frames = torch.cat([b["frames"] for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    assert frames.dtype == torch.uint8 and frames.shape == (128, 64, 64, 3)
    assert labels.dtype == torch.float32 and labels.shape == (128, 36)
    np.testing.assert_array_equal(frames.numpy(), arrays.frames)  # val keeps shard order
    np.testing.assert_array_equal(labels.numpy(), arrays.labels)
    assert all(b["own_goal"].eq(-1).all() for b in batches)  # shapes frames have no mission
    train_keys = [k for b in dm.train_dataloader() for k in b["keys"]]
    assert len(train_keys) == len(set(train_keys)) == 384
    assert train_keys != sorted(train_keys)  # shuffled


def test_datamodule_goal_subset_reorders_labels(shapes_dataset):
    goals = ["a blue key", "a red circle"]
    with pytest.raises(VlmrError, match="goal sets differ"):
        ShardDataModule(shapes_dataset, goals=goals)


def test_missing_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "train-000000.tar").write_bytes(b"")
    with pytest.raises(VlmrError, match="incomplete"):
        ShardDataModule(tmp_path)


def test_cli_source_shortcut(tmp_path):
    from vlmr.rl.collect.collect import main

    out = tmp_path / "s"
    assert main(["--source", "shapes", f"out_dir={out}", "frames.train=20", "frames.val=5", "frames.test=5",
                 "--quiet"]) == 0
    m = read_json(out / "manifest.json")
    assert m["config"]["frames"] == {"train": 20, "val": 5, "test": 5}
