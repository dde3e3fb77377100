"""What the integrity checks cost (docs/DESIGN.md, "Integrity"), measured side by side in one run.

    python -m vlmr.bench.integrity --frames 2000
    vlmr bench --only integrity

- collection: the one check collection adds is the frame hash ShardSink.write stores (the shard's sha256 was
  already computed for the manifest). It is timed over the frames just collected and given as a share of
  the collection's own wall time: timing the hash alone is steadier than differencing two noisy collections.
- read: samples/s of vlmr.core.dataset.iter_split with the checks (every shard hashed afresh: the
  per-process memo is cleared each round, so this is the first-read cost) and without (`unchecked()`),
  called alternately; medians.
- loader: the same for ShardDataModule's train loader, which finetune reads through. A training step adds
  the model's time on top of loading, so this ratio bounds what the checks cost training throughput.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def bench_integrity(frames: int = 2000, min_seconds: float = 1.0) -> dict:
    from vlmr.bench.reward import timed_pair
    from vlmr.core.dataset import iter_split
    from vlmr.core.integrity import forget_hashes, frame_sha256, shard_sha256, unchecked
    from vlmr.finetune.datamodule import ShardDataModule
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    with tempfile.TemporaryDirectory(prefix="vlmr-bench-integrity-") as tmp:
        cfg = CollectConfig(name="bench", source="shapes", out_dir=f"{tmp}/d", image_size=64, shard_size=500,
                            frames=SplitFrames(train=frames, val=0, test=0))
        t0 = time.perf_counter()
        data = collect(cfg, progress=False)
        collect_s = time.perf_counter() - t0
        with unchecked():
            pixels = [s["frame"] for s in iter_split(data, "train")]
        t0 = time.perf_counter()
        for frame in pixels:
            frame_sha256(frame)
        hash_s = time.perf_counter() - t0
        shards = sorted(Path(data).glob("train-*.tar"))
        forget_hashes()
        t0 = time.perf_counter()
        for shard in shards:
            shard_sha256(shard)
        shard_mb_s = sum(p.stat().st_size for p in shards) / 1e6 / (time.perf_counter() - t0)

        def read():
            forget_hashes()
            assert sum(1 for _ in iter_split(data, "train")) == frames

        def read_unchecked():
            with unchecked():
                sum(1 for _ in iter_split(data, "train"))

        dm = ShardDataModule(data, batch_size=64, shuffle_buffer=0)

        def load():
            forget_hashes()
            for _ in dm.train_dataloader():
                pass

        def load_unchecked():
            with unchecked():
                for _ in dm.train_dataloader():
                    pass

        read_s, read_plain_s = timed_pair(read, read_unchecked, min_seconds, min_rounds=3)
        load_s, load_plain_s = timed_pair(load, load_unchecked, min_seconds, min_rounds=3)
    return {"frames": frames, "collect_fps": frames / collect_s, "frame_hash_us": 1e6 * hash_s / frames,
            "collection_overhead": hash_s / collect_s, "shard_hash_mb_s": shard_mb_s,
            "read_fps": frames / read_s, "read_unchecked_fps": frames / read_plain_s,
            "read_ratio": read_plain_s / read_s,
            "loader_fps": frames / load_s, "loader_unchecked_fps": frames / load_plain_s,
            "loader_ratio": load_plain_s / load_s}


def markdown(r: dict) -> str:
    return "\n".join([
        "| path | with checks | without | ratio |", "|---|---|---|---|",
        f"| iter_split (samples/s) | {r['read_fps']:.0f} | {r['read_unchecked_fps']:.0f} | {r['read_ratio']:.3f} |",
        f"| finetune train loader (samples/s) | {r['loader_fps']:.0f} | {r['loader_unchecked_fps']:.0f} | "
        f"{r['loader_ratio']:.3f} |",
        "",
        f"Collection: {r['collect_fps']:.0f} frames/s; the frame hash takes {r['frame_hash_us']:.1f} us per frame, "
        f"{100 * r['collection_overhead']:.2f}% of collection time. Shard sha256: {r['shard_hash_mb_s']:.0f} MB/s."])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    print(markdown(bench_integrity(args.frames, args.min_seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
