"""A LightningDataModule over vlmr webdataset shards (format in docs/DESIGN.md).

    dm = ShardDataModule("data/babyai_goto", batch_size=64, num_workers=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    batch["frames"]     # uint8 (B, H, W, 3)
    batch["captions"]   # list[str]: a random paraphrase in train, the first (canonical) caption otherwise
    batch["labels"]     # float (B, G), aligned with dm.goals
    batch["own_goal"]   # long (B,): index of the episode's mission in dm.goals, -1 if none
    batch["keys"]       # list[str]

Shards are split across nodes (`split_by_node`) and dataloader workers
(`split_by_worker`); train shuffles shard order and samples in a buffer.

With `select_fraction > 0` a `select` split is carved from train by env seed: whole episodes
whose seed hashes below the fraction leave train and form the split that validation runs on,
so early stopping and best-checkpoint choice never look at val, the split calibration fits on.

The manifest is checked first: a dataset without one is incomplete. Each
shard's sha256 is checked against it (once per process) before the shard is
streamed, and each frame against its frame_sha256 after decoding
(vlmr.core.integrity). Damaged shards and samples are skipped with a warning
and counted per split in `dm.skipped_by_split` (samples; dataloader workers
included, each sample once however many epochs meet it), or raise with strict=True.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from vlmr.core.dataset import (
    CountCheck,
    SkipCounter,
    check_goal_sets,
    decode_sample,
    expected_counts,
    read_manifest,
    seen_goals,
    split_shards,
)
from vlmr.core.errors import VlmrError
from vlmr.core.integrity import hashed_urls, verified_shards


class _Decode:
    """Raw sample -> training item; picklable so it runs inside dataloader workers."""

    def __init__(self, goals: list[str], counter: SkipCounter, random_caption: bool, seed: int,
                 hashed: frozenset[str] = frozenset()):
        self.goals, self.counter, self.random_caption, self.hashed = goals, counter, random_caption, hashed
        self.index = {g: i for i, g in enumerate(goals)}
        self.rng = random.Random(seed)

    def __call__(self, stream):
        for raw in stream:
            try:
                s = decode_sample(raw, raw.get("__url__") in self.hashed)
                meta = s["meta"]
                captions = meta.get("captions") or [meta.get("mission") or ""]
                labels = meta.get("labels") or {}
                yield {"frame": s["frame"], "key": s["key"],
                       "caption": self.rng.choice(captions) if self.random_caption else captions[0],
                       "labels": np.asarray([float(labels.get(g, 0)) for g in self.goals], dtype=np.float32),
                       "own_goal": self.index.get(meta.get("mission"), -1)}
            except Exception as e:  # noqa: BLE001 - one undecodable sample is skippable data damage
                self.counter.skip(f"sample {raw.get('__url__')} {raw.get('__key__')}", f"corrupt data: {e}; skipping it")


def collate(items: list[dict]) -> dict:
    shapes = {it["frame"].shape for it in items}
    if len(shapes) > 1:
        raise VlmrError(f"frames of different sizes in one batch: {sorted(shapes)}; recollect at one image_size")
    return {"frames": torch.from_numpy(np.stack([it["frame"] for it in items])),
            "captions": [it["caption"] for it in items],
            "labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
            "own_goal": torch.tensor([it["own_goal"] for it in items], dtype=torch.long),
            "keys": [it["key"] for it in items]}


def in_select(env_seed: int, fraction: float) -> bool:
    """Whether an episode's env seed belongs to the `select` split (Knuth's multiplicative hash: spreads
    consecutive seeds, so every shard and env of the mix gives its share)."""
    return (int(env_seed) * 2654435761) % 2**32 < fraction * 2**32


class _SeedFilter:
    """webdataset stage on raw samples: keep the select split's episodes (keep_select) or the rest."""

    def __init__(self, fraction: float, keep_select: bool):
        self.fraction, self.keep_select = fraction, keep_select

    def __call__(self, stream):
        for raw in stream:
            try:
                seed = json.loads(raw["meta.json"])["env_seed"]
            except (KeyError, TypeError, ValueError):
                yield raw  # undecodable: _Decode counts it as damage
                continue
            if in_select(seed, self.fraction) == self.keep_select:
                yield raw


class ShardDataModule(pl.LightningDataModule):
    def __init__(self, data_dir, goals: list[str] | None = None, batch_size: int = 64, num_workers: int = 0,
                 shuffle_buffer: int = 1000, seed: int = 0, strict: bool = False, select_fraction: float = 0.0):
        super().__init__()
        if not 0.0 <= select_fraction < 1.0:
            raise VlmrError(f"data.select_fraction={select_fraction} must be in [0, 1)")
        self.select_fraction = select_fraction
        # the split validation (and any checkpoint selection) runs on: never val when select exists
        self.val_split = "select" if select_fraction > 0 else "val"
        self.data_dir, self.batch_size, self.num_workers = data_dir, batch_size, num_workers
        self.shuffle_buffer, self.seed, self.strict = shuffle_buffer, seed, strict
        self.manifest = read_manifest(data_dir)
        # held-out goals are never candidates in the training loss: the default goal set is the seen goals
        self.goals = list(goals) if goals is not None else seen_goals(self.manifest)
        check_goal_sets(self.manifest["goals"], self.goals, data_dir, "the requested goal set",
                        holdout=self.manifest.get("holdout_goals"))
        self.image_size = self.manifest.get("image_size")
        self.counters: dict[str, SkipCounter] = {}

    def shard_sizes(self, split: str = "train") -> list[int]:
        """Samples per shard of a split as loaded: train without the select split's episodes (read from the
        shards' meta.json members; the frames are not decoded)."""
        import tarfile

        entries = self.manifest["splits"][split]["shards"]
        if self.select_fraction == 0 or split != "train":
            return [int(s["samples"]) for s in entries]
        sizes = []
        for entry in entries:
            with tarfile.open(Path(self.data_dir) / entry["name"]) as tar:
                seeds = [json.load(tar.extractfile(m))["env_seed"] for m in tar if m.name.endswith(".meta.json")]
            sizes.append(sum(not in_select(s, self.select_fraction) for s in seeds))
        return sizes

    @property
    def skipped(self) -> int:
        """Samples skipped so far, all splits."""
        return sum(self.skipped_by_split.values())

    @property
    def skipped_by_split(self) -> dict[str, int]:
        """Samples skipped so far per split read (damaged shards count all their samples)."""
        return {split: c.skipped for split, c in self.counters.items()}

    def counter(self, split: str) -> SkipCounter:
        if split not in self.counters:  # made in this process, before workers start: they share its counts
            self.counters[split] = SkipCounter(self.strict)
        return self.counters[split]

    def verify(self, split: str) -> list[str]:
        """The split's shards whose sha256 matches the manifest; damaged ones are reported and counted."""
        split_shards(self.data_dir, split, self.manifest)  # a missing split or shard is an error
        return [str(p) for p in verified_shards(self.data_dir, split, self.manifest, self.counter(split))]

    def dataset(self, split: str):
        import webdataset as wds

        train = split == "train"
        source = "train" if split == "select" else split  # select is carved from train's shards
        counter = self.counter(split)
        split_shards(self.data_dir, source, self.manifest)  # a missing split or shard is an error
        urls = [str(p) for p in verified_shards(self.data_dir, source, self.manifest, counter)]
        if not urls:
            raise VlmrError(f"dataset {self.data_dir} split {source!r} has no intact shard (see the warnings above); "
                            f"`vlmr verify {self.data_dir}` lists them, `vlmr collect CONFIG --resume` repairs them")
        ds = wds.WebDataset(urls, shardshuffle=len(urls) if train else False, nodesplitter=wds.split_by_node,
                            workersplitter=wds.split_by_worker, handler=counter, empty_check=False,
                            seed=self.seed if train else None)
        ds = ds.compose(CountCheck(expected_counts(self.data_dir, source, self.manifest), counter))
        if self.select_fraction > 0 and source == "train":
            ds = ds.compose(_SeedFilter(self.select_fraction, keep_select=split == "select"))
        if train and self.shuffle_buffer > 1:
            ds = ds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100),
                            rng=random.Random(self.seed))
        hashed = hashed_urls(self.data_dir, source, self.manifest)
        return ds.compose(_Decode(self.goals, counter, train, self.seed, hashed))

    def _loader(self, split: str) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset(split), batch_size=self.batch_size, collate_fn=collate,
                                           num_workers=self.num_workers, persistent_workers=False,
                                           pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader(self.val_split)
