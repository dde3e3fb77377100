"""The collection config: what `vlmr collect` renders, and the fingerprint of what decides shard content.

    from vlmr.rl.collect.collect_config import CollectConfig, fingerprint
    cfg = CollectConfig(name="goto", source="babyai", env_id="BabyAI-GoToLocal-v0", out_dir="data/goto")

Every key with its one-line doc is below; `vlmr collect` (rl/collect/collect.py) runs it.
"""

from __future__ import annotations

import dataclasses

from vlmr.rl.envs import family

from vlmr.core.config import PositiveInt, config_dataclass, config_fingerprint, config_to_dict
from vlmr.core.dataset import SPLITS
from vlmr.core.errors import VlmrError

EPISODE_STRIDE = 10_000  # episode numbers reserved per shard


@config_dataclass
class SplitFrames:
    train: int = 4000  # frames in the train split
    val: int = 500  # frames in the val split
    test: int = 500  # frames in the test split


@config_dataclass
class CollectConfig:
    name: str = "shapes"  # dataset name, recorded in the manifest
    source: str = "shapes"  # environment family that renders and labels the frames: shapes | babyai | crafter
    out_dir: str = "data/shapes"  # folder for {split}-NNNNNN.tar shards and manifest.json
    env_id: str = ""  # environment id for source=babyai (e.g. BabyAI-GoToLocal-v0); crafter ignores it
    env_mix: list[str] = dataclasses.field(default_factory=list)  # babyai: more env ids, episodes take turns
    goals: list[str] | None = None  # goal set to label; null: the source's own (babyai: its family's goals; a
    # family name such as goto or pickup stands for all its goals)
    view: str = "egocentric"  # babyai frames: egocentric (minigrid point of view) | egocentric_carry (a carried
    # object drawn without the agent over it) | topdown (whole grid); rl/envs/babyai.py
    image_size: PositiveInt = 64  # frame side in pixels, the reward model's input size
    frames: SplitFrames = dataclasses.field(default_factory=SplitFrames)  # frames per split
    shard_size: int = 1000  # frames per shard (at most 10000)
    seed: int = 0  # base seed; env seeds are derived from it per split and episode
    max_steps: int = 64  # step cap per episode (behaviour policy steps)
    noise: float = 0.2  # probability that a behaviour step is a random action instead of the bot's
    linger: int = 3  # noisy steps still recorded after the episode's mission is achieved
    negative_keep: float = 1.0  # share of own-goal-negative frames kept; below 1 balances the data
    mission_in_goals: bool = True  # skip episodes whose mission is not in the goal set (e.g. "go to a ball")
    shapes_max_objects: int = 3  # shapes: most objects per scene
    shapes_viewer_prob: float = 0.35  # shapes: share of viewer scenes ("right in front of you")
    overwrite: bool = False  # replace an existing dataset in out_dir (with --resume: only one of another config)
    min_positives_per_split: int | dict[str, int] = 0  # every goal gets at least this many positive frames in each
    # split, or per split ({train: 100, val: 250, test: 100}: calibration's guarantee needs val positives most): top-up
    # shards aim episodes at short goals (rl/collect/coverage.py); a goal that cannot is dropped from the set
    max_topup_ratio: float = 1.0  # top-up frames per split at most this multiple of the split's planned frames
    coverage_splits: list[str] | None = None  # splits that get top-ups; null = every split with frames (a
    # re-render of one split replays just its top-ups)
    holdout_goals: str | list[str] | None = None  # goals kept out of train: a list of sentences or the rule
    # one_in_three_pairs; their episodes and any caption naming their colour-object pair (rl/collect/holdout.py)
    attribute_captions: bool = False  # babyai: also captions naming the faced/carried object's colour alone and
    # its type alone, so that the text tower can compose pairs it never read (held-out goals)
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')


def make_source(cfg: CollectConfig):
    """The data source of the family named cfg.source (vlmr.rl.envs.FAMILIES)."""
    return family(cfg.source).make_source(cfg)


def validate(cfg: CollectConfig) -> None:
    if not 1 <= cfg.shard_size <= EPISODE_STRIDE:
        raise VlmrError(f"shard_size={cfg.shard_size} must be between 1 and {EPISODE_STRIDE}")
    if not 0.0 < cfg.negative_keep <= 1.0:
        raise VlmrError(f"negative_keep={cfg.negative_keep} must be in (0, 1]")
    if cfg.frames.train < 1 or cfg.frames.val < 0 or cfg.frames.test < 0:
        raise VlmrError(f"frames={cfg.frames} must be positive (train >= 1)")
    if cfg.attribute_captions and cfg.source != "babyai":
        raise VlmrError(f"attribute_captions=true is for source babyai (colour and object words); source "
                        f"{cfg.source!r} has none: remove the key")
    minimum = cfg.min_positives_per_split
    if isinstance(minimum, dict) and set(minimum) - set(SPLITS):
        raise VlmrError(f"min_positives_per_split names {sorted(set(minimum) - set(SPLITS))}; its keys are the splits "
                        f"{', '.join(SPLITS)}")
    if min(minimum.values() if isinstance(minimum, dict) else [minimum], default=0) < 0 or cfg.max_topup_ratio < 0:
        raise VlmrError(f"min_positives_per_split={cfg.min_positives_per_split} and max_topup_ratio="
                        f"{cfg.max_topup_ratio} must be >= 0")


def fingerprint(cfg: CollectConfig) -> str:
    """What decides shard content: the config minus where it goes, whether to overwrite, and strictness.

    The top-up settings are left out too: they decide which top-up shards exist, and each top-up shard's
    record holds its focus and size, so a changed setting rewrites just the top-ups it changes.
    """
    d = config_to_dict(cfg)
    if cfg.holdout_goals:  # held-out goals' positives now leave train too: such datasets are collected anew
        d["holdout_train"] = "no episodes, captions or positive frames of held-out goals"
    else:  # datasets from before the key keep their identity
        d.pop("holdout_goals")
    if not cfg.attribute_captions:  # likewise
        d.pop("attribute_captions")
    return config_fingerprint(d, drop=("out_dir", "overwrite", "name", "strict", "min_positives_per_split",
                                       "max_topup_ratio", "coverage_splits"))
