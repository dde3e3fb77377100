"""A LightningDataModule over vlmr webdataset shards (format in docs/DESIGN.md).

    dm = ShardDataModule("data/babyai_goto", batch_size=64, num_workers=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    batch["frames"]     # uint8 (B, H, W, 3)
    batch["captions"]   # list[str]: a random paraphrase in train, the first (canonical) caption otherwise
    batch["labels"]     # float (B, G), aligned with dm.goals
    batch["own_goal"]   # long (B,): index of the episode's mission in dm.goals, -1 if none
    batch["keys"]       # list[str]
    batch["from_mix"]   # bool (B,): the frame came from mix_dir

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

With `mix_dir` (a second dataset with the same goal set and image size, e.g. an agent's rollouts),
each training sample is replaced, with probability `mix_ratio` (a seeded choice per sample), by the
next sample of mix_dir's train split. An epoch is still one pass over the main train split, so
validation intervals and the DDP step limit keep their meaning; the mix stream is shuffled and
repeated as long as it is needed, read whole by every worker and rank (it is sampled, not
partitioned, so a single rollout shard serves any number of workers). Validation stays on the main
data's select/val split. mix_dir's shards and frames are checked like the main data's and its
skips counted apart (`dm.mix_skipped`).

    dm = ShardDataModule("data/babyai_goto", mix_dir="data/rollouts", mix_ratio=0.3)
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import random
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from vlmr.core.dataset import (
    MANIFEST_FILE,
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
from vlmr.core.files import sha256_file
from vlmr.core.integrity import hashed_urls, verified_shards

MAX_WORKERS = 256  # dataloader workers per process whose mix passes are counted apart (more share a slot)


class _Decode:
    """Raw sample -> training item; picklable so it runs inside dataloader workers."""

    def __init__(self, goals: list[str], counter: SkipCounter, random_caption: bool, seed: int,
                 hashed: frozenset[str] = frozenset(), from_mix: bool = False):
        self.goals, self.counter, self.random_caption, self.hashed = goals, counter, random_caption, hashed
        self.from_mix = from_mix
        self.index = {g: i for i, g in enumerate(goals)}
        self.rng = random.Random(seed)

    def one(self, raw) -> dict | None:
        """The item of one raw sample, or None (counted as damage) when it cannot be decoded."""
        try:
            s = decode_sample(raw, raw.get("__url__") in self.hashed)
            meta = s["meta"]
            captions = meta.get("captions") or [meta.get("mission") or ""]
            labels = meta.get("labels") or {}
            return {"frame": s["frame"], "key": s["key"],
                    "caption": self.rng.choice(captions) if self.random_caption else captions[0],
                    "labels": np.asarray([float(labels.get(g, 0)) for g in self.goals], dtype=np.float32),
                    "own_goal": self.index.get(meta.get("mission"), -1), "from_mix": self.from_mix}
        except Exception as e:  # noqa: BLE001 - one undecodable sample is skippable data damage
            self.counter.skip(f"sample {raw.get('__url__')} {raw.get('__key__')}", f"corrupt data: {e}; skipping it")
            return None

    def __call__(self, stream):
        for raw in stream:
            item = self.one(raw)
            if item is not None:
                yield item


def collate(items: list[dict]) -> dict:
    shapes = {it["frame"].shape for it in items}
    if len(shapes) > 1:
        raise VlmrError(f"frames of different sizes in one batch: {sorted(shapes)}; recollect at one image_size")
    return {"frames": torch.from_numpy(np.stack([it["frame"] for it in items])),
            "captions": [it["caption"] for it in items],
            "labels": torch.from_numpy(np.stack([it["labels"] for it in items])),
            "own_goal": torch.tensor([it["own_goal"] for it in items], dtype=torch.long),
            "keys": [it["key"] for it in items],
            "from_mix": torch.tensor([it.get("from_mix", False) for it in items], dtype=torch.bool)}


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


class _MixSource:
    """One shuffled pass over mix_dir's train shards as raw samples; picklable, for dataloader workers.
    Not split by node or worker: every reader samples the whole mix, with its own seed."""

    def __init__(self, urls: list[str], expected: dict[str, int], counter: SkipCounter, shuffle_buffer: int):
        self.urls, self.expected, self.counter, self.shuffle_buffer = urls, expected, counter, shuffle_buffer

    def __call__(self, seed: int):
        import webdataset as wds

        ds = wds.WebDataset(self.urls, shardshuffle=len(self.urls), nodesplitter=None, workersplitter=None,
                            handler=self.counter, empty_check=False, seed=seed)
        ds = ds.compose(CountCheck(self.expected, self.counter))
        if self.shuffle_buffer > 1:
            ds = ds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), rng=random.Random(seed))
        return iter(ds)


class _Mixed(torch.utils.data.IterableDataset):
    """The training stream with mix_dir: each main sample is kept, or with probability `ratio` replaced by the
    next sample of the (repeated) mix stream, so an epoch is still one pass over the main train split.

    The choice and the mix order are seeded by (seed, rank, worker, epoch): ranks and workers draw different
    mix samples, and each epoch replaces other main samples. Epochs are counted per worker in shared memory,
    because dataloader workers get a fresh copy of this object every epoch."""

    def __init__(self, main, main_decode: _Decode, mix: _MixSource, mix_decode: _Decode, ratio: float, seed: int,
                 mix_dir: str):
        self.main, self.main_decode, self.mix, self.mix_decode = main, main_decode, mix, mix_decode
        self.ratio, self.seed, self.mix_dir = ratio, seed, mix_dir
        self.epochs = mp.RawArray("q", MAX_WORKERS)

    def __iter__(self):
        from webdataset.utils import pytorch_worker_info

        rank, _, worker, _ = pytorch_worker_info()
        epoch = self.epochs[worker % MAX_WORKERS]
        self.epochs[worker % MAX_WORKERS] = epoch + 1
        tag = f"{self.seed}-{rank}-{worker}-{epoch}"
        choose = random.Random(f"choice-{tag}")
        mix = self._repeat(tag)
        for raw in self.main:
            item = next(mix) if self.ratio > 0 and choose.random() < self.ratio else self.main_decode.one(raw)
            if item is not None:
                yield item

    def _repeat(self, tag: str):
        for n in itertools.count():
            got = 0
            for raw in self.mix(random.Random(f"mix-{tag}-{n}").getrandbits(32)):
                if (item := self.mix_decode.one(raw)) is not None:
                    got += 1
                    yield item
            if not got:  # every sample damaged: nothing to draw, and looping again would never end
                raise VlmrError(f"data.mix_dir={self.mix_dir}: no readable train sample (see the warnings above); "
                                f"`vlmr verify {self.mix_dir}` lists the damaged shards")


class ShardDataModule(pl.LightningDataModule):
    def __init__(self, data_dir, goals: list[str] | None = None, batch_size: int = 64, num_workers: int = 0,
                 shuffle_buffer: int = 1000, seed: int = 0, strict: bool = False, select_fraction: float = 0.0,
                 mix_dir=None, mix_ratio: float = 0.5):
        super().__init__()
        if not 0.0 <= select_fraction < 1.0:
            raise VlmrError(f"data.select_fraction={select_fraction} must be in [0, 1)")
        if not 0.0 <= mix_ratio <= 1.0:
            raise VlmrError(f"data.mix_ratio={mix_ratio} must be in [0, 1]: the share of training samples drawn "
                            "from data.mix_dir")
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
        self.mix_dir, self.mix_ratio = mix_dir, mix_ratio
        self.mix_manifest = read_manifest(mix_dir) if mix_dir is not None else None
        # made here, before workers start: they share its counts
        self.mix_counter = SkipCounter(strict) if mix_dir is not None else None
        if self.mix_manifest is not None:
            self._check_mix()

    def _check_mix(self) -> None:
        """mix_dir must describe the same task: the run's goal set (or its seen goals) and the main frames' size."""
        mm, where = self.mix_manifest, f"data.mix_dir={self.mix_dir}"
        if set(self.goals) not in (set(mm["goals"]), set(seen_goals(mm))):
            only_mix = [g for g in mm["goals"] if g not in self.goals]
            only_run = [g for g in self.goals if g not in mm["goals"]]
            raise VlmrError(f"{where}: its goal set differs from this run's ({len(self.goals)} goals of "
                            f"{self.data_dir}): only in mix_dir {only_mix[:5]}, only in the run {only_run[:5]}; "
                            "mix in data collected for the same goal set")
        if mm.get("image_size") != self.image_size:
            raise VlmrError(f"{where}: its frames are {mm.get('image_size')} px but data.dir {self.data_dir} has "
                            f"{self.image_size} px frames; collect the mix data at image_size={self.image_size}")
        split_shards(self.mix_dir, "train", mm)  # a missing split or shard is an error

    def shard_sizes(self, split: str = "train") -> list[int]:
        """Samples per shard of a split as loaded: train without the select split's episodes (read from the
        shards' meta.json members; the frames are not decoded), and none from a shard that fails its hash,
        which the loader skips."""
        import tarfile

        from vlmr.core.integrity import checks_enabled, shard_problem

        entries = [e for e in self.manifest["splits"][split]["shards"]
                   if not checks_enabled() or shard_problem(Path(self.data_dir) / e["name"], e) is None]
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

    @property
    def mix_skipped(self) -> dict[str, int]:
        """Samples of mix_dir skipped so far (its train split is the only one read); {} without mix_dir."""
        return {"train": self.mix_counter.skipped} if self.mix_dir is not None else {}

    def mix_record(self) -> dict | None:
        """Provenance of mix_dir (run.json and summary.json "mix"); None without one."""
        if self.mix_dir is None:
            return None
        mm = self.mix_manifest
        return {"dir": str(self.mix_dir), "name": mm.get("name"), "source": mm.get("source"),
                "manifest_sha256": sha256_file(Path(self.mix_dir) / MANIFEST_FILE), "ratio": self.mix_ratio,
                "skipped_samples": self.mix_skipped}

    def counter(self, split: str) -> SkipCounter:
        if split not in self.counters:  # made in this process, before workers start: they share its counts
            self.counters[split] = SkipCounter(self.strict)
        return self.counters[split]

    def verify(self, split: str) -> list[str]:
        """The split's shards whose sha256 matches the manifest; damaged ones are reported and counted."""
        split_shards(self.data_dir, split, self.manifest)  # a missing split or shard is an error
        return [str(p) for p in verified_shards(self.data_dir, split, self.manifest, self.counter(split))]

    def verify_mix(self) -> list[str]:
        """mix_dir's train shards whose sha256 matches its manifest; damaged ones are reported and counted."""
        urls = [str(p) for p in verified_shards(self.mix_dir, "train", self.mix_manifest, self.mix_counter)]
        if not urls:
            raise VlmrError(f"data.mix_dir={self.mix_dir} has no intact train shard (see the warnings above); "
                            f"`vlmr verify {self.mix_dir}` lists them")
        return urls

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
        decode = _Decode(self.goals, counter, train, self.seed, hashed_urls(self.data_dir, source, self.manifest))
        if not train or self.mix_dir is None:
            return ds.compose(decode)
        mix = _MixSource(self.verify_mix(), expected_counts(self.mix_dir, "train", self.mix_manifest),
                         self.mix_counter, self.shuffle_buffer)
        mix_decode = _Decode(self.goals, self.mix_counter, True, self.seed + 1,
                             hashed_urls(self.mix_dir, "train", self.mix_manifest), from_mix=True)
        return _Mixed(ds, decode, mix, mix_decode, self.mix_ratio, self.seed, str(self.mix_dir))

    def _loader(self, split: str) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset(split), batch_size=self.batch_size, collate_fn=collate,
                                           num_workers=self.num_workers, persistent_workers=False,
                                           pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader(self.val_split)
