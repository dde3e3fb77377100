"""Writing vlmr datasets: atomic webdataset shards and the manifest (format in DESIGN.md).

    with ShardSink(out_dir, "train", index=0) as sink:     # writes .train-000000.tar.tmp
        sink.write(key, frame, meta)                         # frame: uint8 H x W x 3
    sink.stats                                               # name, samples, sha256 ... (after the rename)
    write_manifest(out_dir, name=..., source=..., goals=..., image_size=64, view=..., splits=..., config=...)

A shard is written under a hidden temporary name by webdataset's ShardWriter
and renamed to `{split}-{index:06d}.tar` only once closed and fsynced, so a
killed collection never leaves a truncated shard under a real name. The
manifest is written last, atomically: without it the dataset is incomplete.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from finetune.files import atomic_write_json, sha256_file
from finetune.shards import MANIFEST_FILE, MANIFEST_VERSION, SPLITS


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
                      "env_seeds": [min(self.seeds), max(self.seeds)] if self.seeds else None}
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
    return {"shards": [{k: s[k] for k in ("name", "samples", "sha256")} for s in shard_stats],
            "samples": sum(s["samples"] for s in shard_stats),
            "episodes": sum(s["episodes"] for s in shard_stats),
            "positives": dict(sorted(positives.items())),
            "env_seeds": [min(a for a, _ in seeds), max(b for _, b in seeds)] if seeds else None}


def write_manifest(out_dir: str | Path, *, name: str, source: str, goals: list[str], image_size: int, view: str | None,
                   splits: dict[str, list[dict]], config: dict, run: dict | None = None, extra: dict | None = None
                   ) -> Path:
    """The dataset's manifest; call it last, once every shard is closed."""
    manifest = {"version": MANIFEST_VERSION, "name": name, "source": source, "goals": list(goals),
                "image_size": image_size, "view": view,
                "splits": {s: split_summary(splits[s]) for s in SPLITS if splits.get(s)},
                "config": config, "run": run, **(extra or {})}
    return atomic_write_json(Path(out_dir) / MANIFEST_FILE, manifest)
