"""The vlmr dataset format in one place: webdataset shards plus `manifest.json` (docs/DESIGN.md).

Reading:

    manifest = read_manifest("data/babyai_goto")
    for sample in iter_split("data/babyai_goto", "val"):     # {"key", "frame", "meta"}
        ...
    arrays = load_split_arrays("data/babyai_goto", "test", goals=rm.goals)   # frames, labels, own-goal ids

A dataset without a manifest is incomplete (the manifest is written last).
Every shard's sha256 is checked against the manifest before it is read, and
every frame against its frame_sha256 after it is decoded (vlmr.core.integrity).
Damaged shards and samples are skipped with a warning and counted (in samples,
per reader: `SkipCounter.skipped`, `SplitArrays.skipped`), or raise with strict=True.

Writing:

    with ShardSink(out_dir, "train", index=0) as sink:     # writes .train-000000.tar.tmp
        sink.write(key, frame, meta)                         # frame: uint8 H x W x 3
    write_manifest(out_dir, name=..., source=..., goals=..., image_size=64, view=..., splits=..., config=...)

A shard is written under a hidden temporary name by webdataset's ShardWriter
and renamed to `{split}-{index:06d}.tar` only once closed and fsynced, so a
killed collection never leaves a truncated shard under a real name. The
manifest is written last, atomically: without it the dataset is incomplete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, canonical_json, read_json, sha256_file
from vlmr.core.integrity import check_frame, frame_sha256, hashed_urls, verified_shards
from vlmr.core.quality import quality_issue

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")


def read_manifest(data_dir: str | Path) -> dict:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise VlmrError(f"dataset folder not found: {data_dir}; create it with `vlmr collect CONFIG`")
    if not (data_dir / MANIFEST_FILE).is_file():
        raise VlmrError(f"dataset {data_dir} is incomplete: it has no {MANIFEST_FILE} (written last by `vlmr collect`). "
                        "Finish it with `vlmr collect CONFIG --resume`.")
    manifest = read_json(data_dir / MANIFEST_FILE, "dataset manifest")
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise VlmrError(f"{data_dir / MANIFEST_FILE}: manifest version "
                        f"{manifest.get('version') if isinstance(manifest, dict) else None!r} is not readable by this "
                        f"vlmr (reads version {MANIFEST_VERSION}); recollect the dataset")
    for key in ("goals", "splits"):
        if key not in manifest:
            raise VlmrError(f"{data_dir / MANIFEST_FILE} lacks {key!r}; recollect the dataset")
    return manifest


def split_shards(data_dir: str | Path, split: str, manifest: dict | None = None) -> list[Path]:
    data_dir = Path(data_dir)
    manifest = manifest or read_manifest(data_dir)
    entry = manifest["splits"].get(split)
    if not entry or not entry.get("shards"):
        raise VlmrError(f"dataset {data_dir} has no {split!r} split (it has {sorted(manifest['splits'])})")
    shards = [data_dir / s["name"] for s in entry["shards"]]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:  # a missing file is a broken dataset, not data damage to skip: no stage should go on without it
        raise VlmrError(f"dataset {data_dir}: shards listed in the manifest are missing: {missing[:5]}")
    return shards


class SkipCounter:
    """Warns about and counts skipped samples, or raises in strict mode; also a webdataset handler.

    Counts sit in shared memory, so skips met in dataloader worker processes reach the parent, and each
    skipped thing (a whole shard, or one sample) counts once however many epochs or readers meet it.
    `skipped` is the number of samples left out.
    """

    CAPACITY = 4096  # distinct skipped things remembered; beyond that each skip counts again

    def __init__(self, strict: bool = False):
        import multiprocessing as mp

        self.strict = strict
        self._lock = mp.Lock()
        self._seen = mp.RawArray("Q", self.CAPACITY)
        self._distinct = mp.RawValue("q", 0)
        self._samples = mp.RawValue("q", 0)
        self.messages: list[str] = []  # this process's messages, in order

    @property
    def skipped(self) -> int:
        return int(self._samples.value)

    def skip(self, what: str, message: str, samples: int = 1) -> None:
        """Count `samples` skipped for `what` (once per distinct `what`) and warn, or raise under strict."""
        ident = int.from_bytes(hashlib.blake2b(what.encode(), digest_size=8).digest(), "little")
        with self._lock:
            n = self._distinct.value
            if ident in self._seen[:min(n, self.CAPACITY)]:
                return
            if n < self.CAPACITY:
                self._seen[n] = ident
            self._distinct.value = n + 1
            self._samples.value += samples
        self.messages.append(message)
        quality_issue(message, self.strict, stacklevel=3)

    def __call__(self, exn: Exception) -> bool:
        text = f"{type(exn).__name__}: {str(exn)[:300]}"
        self.skip(text, f"corrupt data: {text}; skipping it")
        return True


def expected_counts(data_dir: str | Path, split: str, manifest: dict | None = None) -> dict[str, int]:
    """Shard path -> sample count listed in the manifest."""
    manifest = manifest or read_manifest(data_dir)
    return {str(Path(data_dir) / s["name"]): int(s["samples"]) for s in manifest["splits"][split]["shards"]}


class CountCheck:
    """webdataset stage: a shard that yields fewer samples than the manifest lists was truncated.

    A tar cut at a record boundary just ends early without an error, so this is
    how such a shard is noticed: it is reported to the counter (warn and count,
    or raise in strict mode) unless the counter already saw an error for it.
    """

    def __init__(self, expected: dict[str, int], counter: SkipCounter):
        self.expected, self.counter = expected, counter

    def _check(self, url, n):
        want = self.expected.get(url)
        if url is None or want is None or n >= want:
            return
        if any(url in m for m in self.counter.messages):
            return
        self.counter.skip(f"count {url}", f"corrupt data: shard {url} is truncated: {n} of {want} samples "
                          "readable; skipping the rest", samples=want - n)

    def __call__(self, stream):
        url, n = None, 0
        for sample in stream:
            u = sample.get("__url__")
            if u != url:
                self._check(url, n)
                url, n = u, 0
            n += 1
            yield sample
        self._check(url, n)


def decode_sample(sample: dict, require_hash: bool = False) -> dict:
    """Raw webdataset sample (bytes) -> {"key", "frame": uint8 H x W x 3, "meta": dict}.

    The decoded pixels are checked against meta.json's frame_sha256 (which `require_hash` says must be there):
    a PNG that decodes to other pixels than were collected raises ValueError, like one that does not decode.
    """
    from PIL import Image

    if "frame.png" not in sample or "meta.json" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} lacks frame.png or meta.json")
    frame = np.asarray(Image.open(io.BytesIO(sample["frame.png"])).convert("RGB"))
    meta = json.loads(sample["meta.json"])
    check_frame(frame, meta, sample["__key__"], sample.get("__url__"), require_hash)
    return {"key": sample["__key__"], "frame": frame, "meta": meta}


def iter_split(data_dir: str | Path, split: str, strict: bool = False, counter: SkipCounter | None = None
               ) -> Iterator[dict]:
    """Every sample of a split, in shard order; damaged shards and samples are skipped (and counted in `counter`).

    Each shard's sha256 is checked against the manifest before it is streamed, and each frame against its
    frame_sha256 after it is decoded (vlmr.core.integrity).
    """
    import webdataset as wds

    counter = counter or SkipCounter(strict)
    manifest = read_manifest(data_dir)
    split_shards(data_dir, split, manifest)  # a split the manifest lacks is an error, not a skip
    urls = [str(p) for p in verified_shards(data_dir, split, manifest, counter)]
    if not urls:
        return
    hashed = hashed_urls(data_dir, split, manifest)
    stream = wds.WebDataset(urls, shardshuffle=False, handler=counter, empty_check=False)
    stream = stream.compose(CountCheck(expected_counts(data_dir, split, manifest), counter))
    for raw in stream:
        try:
            sample = decode_sample(raw, raw.get("__url__") in hashed)
        except Exception as e:  # noqa: BLE001 - any decode failure of one sample is skippable data damage
            counter.skip(f"sample {raw.get('__url__')} {raw.get('__key__')}", f"corrupt data: {e}; skipping it")
            continue
        yield sample


@dataclasses.dataclass
class SplitArrays:
    """A labelled split in memory, labels aligned with `goals`."""

    frames: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int8 (N, G): ground truth of every goal for every frame
    own_goal: np.ndarray  # int64 (N,): index of the frame's episode mission in `goals`, -1 if not a goal
    episodes: np.ndarray  # int64 (N,)
    keys: list[str]
    goals: list[str]
    skipped: int = 0


def seen_goals(manifest: dict) -> list[str]:
    """The goals a model trains on: the dataset's goal set less the goals it holds out of training."""
    held = set(manifest.get("holdout_goals") or ())
    return [g for g in manifest["goals"] if g not in held]


def check_goal_sets(data_goals: list[str], model_goals: list[str], data_dir, model_name="the reward model",
                    holdout: list[str] | None = None) -> None:
    """The model's goal set must be the dataset's, or (with held-out goals) the dataset's seen goals."""
    if holdout and set(model_goals) == set(data_goals) - set(holdout):
        return
    only_data = [g for g in data_goals if g not in model_goals]
    only_model = [g for g in model_goals if g not in data_goals]
    if only_data or only_model:
        raise VlmrError(f"goal sets differ between dataset {data_dir} and {model_name}: "
                        f"in the data only {only_data[:5]}, in the model only {only_model[:5]}. "
                        "Use a model built for this dataset's goal set.")


def load_split_arrays(data_dir: str | Path, split: str, goals: list[str] | None = None, limit: int | None = None,
                      strict: bool = False) -> SplitArrays:
    manifest = read_manifest(data_dir)
    goals = list(goals) if goals is not None else list(manifest["goals"])
    check_goal_sets(manifest["goals"], goals, data_dir, holdout=manifest.get("holdout_goals"))
    index = {g: i for i, g in enumerate(goals)}
    counter = SkipCounter(strict)
    frames, labels, own, episodes, keys = [], [], [], [], []
    for sample in iter_split(data_dir, split, strict, counter):
        meta = sample["meta"]
        if not meta.get("labels"):
            raise VlmrError(f"dataset {data_dir} split {split!r}: sample {sample['key']} has no labels; "
                            "calibration and evaluation need labelled data")
        frames.append(sample["frame"])
        labels.append([int(meta["labels"].get(g, 0)) for g in goals])
        own.append(index.get(meta.get("mission"), -1))
        episodes.append(int(meta.get("episode", -1)))
        keys.append(sample["key"])
        if limit and len(frames) >= limit:
            break
    if not frames:
        raise VlmrError(f"dataset {data_dir} split {split!r} has no readable samples")
    return SplitArrays(np.stack(frames), np.asarray(labels, dtype=np.int8), np.asarray(own, dtype=np.int64),
                       np.asarray(episodes, dtype=np.int64), keys, goals, counter.skipped)


# ---------------------------------------------------------------- writing


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def sample_key(episode: int, step: int) -> str:
    return f"{episode:06d}_{step:04d}"


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 H x W x 3 -> PNG bytes; compress_level 1 because small frames barely compress further."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_meta(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")


class ShardSink:
    """One shard, written atomically with webdataset's ShardWriter; `stats` describes it once closed."""

    def __init__(self, out_dir: str | Path, split: str, index: int):
        import webdataset as wds

        self.out_dir, self.split, self.index = Path(out_dir), split, index
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.final = self.out_dir / shard_name(split, index)
        pattern = str(self.out_dir / f".{split}-%06d.tar.tmp")
        # mtime fixed: the same samples give the same bytes, so a resumed shard hashes like the original
        self.writer = wds.ShardWriter(pattern, maxcount=10**9, start_shard=index, verbose=0, mtime=0.0)
        self.tmp = Path(self.writer.fname)
        self.samples, self.episodes, self.positives = 0, set(), {}
        self.seeds: list[int] = []
        self.stats: dict | None = None

    def write(self, key: str, frame: np.ndarray, meta: dict, frame_png: bytes | None = None) -> None:
        """Write one sample; meta.json gets the frame's pixel hash (frame_png, when given, must encode `frame`)."""
        meta = {**meta, "frame_sha256": frame_sha256(frame)}
        self.writer.write({"__key__": key, "frame.png": frame_png or encode_png(frame), "meta.json": encode_meta(meta)})
        self.samples += 1
        self.episodes.add(meta.get("episode"))
        if meta.get("env_seed") is not None:
            self.seeds.append(int(meta["env_seed"]))
        for goal, value in meta.get("labels", {}).items():
            if value:
                self.positives[goal] = self.positives.get(goal, 0) + 1

    def close(self) -> dict:
        self.writer.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.final)
        self.stats = {"name": self.final.name, "samples": self.samples, "sha256": sha256_file(self.final),
                      "episodes": len(self.episodes), "positives": self.positives,
                      "env_seeds": [min(self.seeds), max(self.seeds)] if self.seeds else None,
                      "frame_hashes": True}
        return self.stats

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def split_summary(shard_stats: list[dict]) -> dict:
    """Per-shard stats of one split -> the manifest's split entry."""
    positives: dict[str, int] = {}
    for s in shard_stats:
        for g, n in s["positives"].items():
            positives[g] = positives.get(g, 0) + n
    seeds = [s["env_seeds"] for s in shard_stats if s.get("env_seeds")]
    # frame_hashes: the shard's samples carry frame_sha256 (absent in shards of an older vlmr, kept on --resume)
    return {"shards": [{k: s[k] for k in ("name", "samples", "sha256", "frame_hashes") if s.get(k) is not None}
                       for s in shard_stats],
            "samples": sum(s["samples"] for s in shard_stats),
            "episodes": sum(s["episodes"] for s in shard_stats),
            "positives": dict(sorted(positives.items())),
            "env_seeds": [min(a for a, _ in seeds), max(b for _, b in seeds)] if seeds else None}


def write_manifest(out_dir: str | Path, *, name: str, source: str, goals: list[str], image_size: int, view: str | None,
                   splits: dict[str, list[dict]], config: dict, run: dict | None = None, extra: dict | None = None,
                   previous: dict | None = None) -> Path:
    """The dataset's manifest; call it last, once every shard is closed.

    previous: the manifest this collection replaces. When only its run record and config echo would change,
    it is written back as it was: a re-collection that rewrote nothing keeps the file's sha256, which
    pipeline stages key their inputs on.
    """
    manifest = {"version": MANIFEST_VERSION, "name": name, "source": source, "goals": list(goals),
                "image_size": image_size, "view": view,
                "splits": {s: split_summary(splits[s]) for s in SPLITS if splits.get(s)},
                "config": config, "run": run, **(extra or {})}
    if previous is not None and _content(json.loads(canonical_json(manifest))) == _content(previous):
        manifest = previous
    return atomic_write_json(Path(out_dir) / MANIFEST_FILE, manifest)


def _content(manifest: dict) -> dict:
    """What a manifest says about the data: all but its run record and config echo."""
    return {k: v for k, v in manifest.items() if k not in ("run", "config")}
