"""Shared fixtures: small labelled datasets collected once per test session.

    shapes_dataset   64 px coloured-shapes corpus, goals "a {colour} {shape}" (36), ~1 s to build
    babyai_dataset   64 px egocentric BabyAI GoToLocal frames, goals "go to the {colour} {type}" (18)

Both are real `vlmr collect` outputs (shards + manifest.json), built into a
session temp folder; read them with vlmr.core.dataset or ShardDataModule.
"""

from __future__ import annotations

import pytest


def _collect(tmp_path_factory, name: str, **fields):
    from vlmr.rl.collect.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp(name) / name
    cfg = CollectConfig(name=name, out_dir=str(out), **fields)
    return collect(cfg, progress=False)


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """Path of a small shapes dataset: train 384 / val 128 / test 128 frames, shards of 128, 64 px."""
    from vlmr.rl.collect.collect import SplitFrames

    return _collect(tmp_path_factory, "shapes", source="shapes", image_size=64,
                    frames=SplitFrames(train=384, val=128, test=128), shard_size=128, seed=0)


@pytest.fixture(scope="session")
def babyai_dataset(tmp_path_factory):
    """Path of a small egocentric BabyAI GoToLocal dataset: train 384 / val 128 / test 128 frames, 64 px."""
    from vlmr.rl.collect.collect import SplitFrames

    return _collect(tmp_path_factory, "babyai_goto", source="babyai", env_id="BabyAI-GoToLocal-v0",
                    view="egocentric", image_size=64, frames=SplitFrames(train=384, val=128, test=128),
                    shard_size=128, seed=0)
