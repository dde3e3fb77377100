"""`vlmr collect`: render labelled, captioned frames into webdataset shards.

    vlmr collect --source shapes                                  # generic corpus for the base CLIP
    vlmr collect configs/data/babyai_goto.yaml --workers 2        # BabyAI GoToLocal, egocentric 64 px
    vlmr collect configs/data/babyai_goto.yaml frames.train=20000 out_dir=data/big --workers 2
    vlmr collect configs/data/crafter.yaml --resume               # continue a killed collection
    vlmr collect configs/data/babyai_goto.yaml out_dir=data/bench overwrite=true

Layout and format: docs/DESIGN.md. Each shard is a fixed unit of work: shard i of a
split holds the episodes whose numbers start at i * 10000, and episode e of a
split uses env seed `seed + split_offset + e` (train, val and test offsets are
10^8 apart), so no layout is shared between splits and a shard's content
depends only on the config. That makes `--workers N` a pool over shards and
`--resume` exact: finished shards (tar + a progress record whose sha256
matches) are kept, the rest are rewritten from scratch, so no sample is ever
duplicated. `manifest.json` is written last.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from vlmr.rl.collect.collect_config import (  # noqa: F401 - callers import SplitFrames from here
    EPISODE_STRIDE,
    CollectConfig,
    SplitFrames,
    fingerprint,
    make_source,
    validate,
)
from vlmr.rl.collect.coverage import RENDER_BUDGET, coverage_notes, topup_tasks
from vlmr.rl.collect.holdout import clean_captions, held_pairs, resolve_holdout

from vlmr.core.config import (
    build_config,
    config_to_dict,
    load_config,
    shipped_configs,
)
from vlmr.core.dataset import MANIFEST_FILE, SPLITS, ShardSink, sample_key, shard_name, write_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, check_writable, read_json, sha256_file, write_error
from vlmr.core.quality import STRICT_HELP, quality_issue

SPLIT_SEED_OFFSET = {"train": 0, "val": 100_000_000, "test": 200_000_000}
PROGRESS_DIR = ".progress"
PREVIOUS_MANIFEST = "manifest.previous"  # not *.json: the progress folder's *.json are shard records


# ---------------------------------------------------------------- one shard (runs in a worker)

_QUEUE = None


def _init_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue


def sample_meta(m: dict, env_seed: int, episode: int, step: int) -> dict:
    """A sample's meta.json (ShardSink adds frame_sha256) from a source's record {"env", "mission", "labels",
    "captions"} and where the frame comes from. The rollout recorder writes its frames through here too."""
    return {"env": m["env"], "env_seed": env_seed, "episode": episode, "step": step, "mission": m["mission"],
            "labels": m["labels"], "captions": m["captions"]}


def _episode_frames(cfg, source, env_seed: int, episode: int, focus: tuple[str, ...] | None, limit: int,
                    held: tuple[set[str], set[str]] | None = None):
    """The kept (key, frame, meta, own-goal positive) of one episode; with a focus, only an episode that reaches one.

    held: (held-out goals, their colour-object phrases) in the train split: such episodes are skipped, frames
    where a held-out goal holds are dropped, and captions naming the phrases dropped.
    """
    keep_rng = np.random.default_rng([env_seed, 7])
    steps = source.episode(env_seed, focus=focus) if focus and getattr(source, "aims", False) else \
        source.episode(env_seed)
    kept, rendered, reached = [], 0, not focus
    for step, (frame, m) in enumerate(steps):
        rendered += 1
        labels, mission = m["labels"], m["mission"]
        if held and mission in held[0]:
            return [], rendered
        if held and any(labels.get(g) for g in held[0]):  # a held-out goal reached by chance: its positive stays out
            continue
        captions = clean_captions(m["captions"], held[1]) if held else m["captions"]
        positive = labels.get(mission, 0) if mission in labels else int(any(labels.values()))
        reached = reached or any(labels.get(g) for g in focus)
        if not positive and cfg.negative_keep < 1.0 and keep_rng.random() >= cfg.negative_keep:
            continue
        meta = sample_meta({**m, "mission": mission, "captions": captions}, env_seed, episode, step)
        kept.append((sample_key(episode, step), frame, meta, int(positive)))
        if not focus and len(kept) >= limit:  # the shard is full: the rest of the episode is never rendered
            break
    return (kept if reached else []), rendered


def collect_shard(cfg_dict: dict, split: str, index: int, nframes: int, focus: tuple[str, ...] | None = None
                  ) -> dict:
    """Write shard `index` of `split` with `nframes` frames; return its stats (also saved as a progress record).

    focus: a top-up shard (rl/collect/coverage.py) keeps only episodes that reach one of these goals.
    """
    cfg = build_config(CollectConfig, cfg_dict)
    source = make_source(cfg)
    out = Path(cfg.out_dir)
    try:
        stats = _write_shard(cfg, source, out, split, index, nframes, focus)
    except OSError as e:  # a full disk mid-shard: no partial shard, and say which
        if isinstance(e, VlmrError):
            raise
        (out / f".{shard_name(split, index)}.tmp").unlink(missing_ok=True)  # ShardSink's, when closing it failed
        raise write_error(out / shard_name(split, index), e, "shard") from None
    atomic_write_json(out / PROGRESS_DIR / f"{split}-{index:06d}.json", stats)
    return stats


def _write_shard(cfg: CollectConfig, source, out: Path, split: str, index: int, nframes: int,
                 focus: tuple[str, ...] | None) -> dict:
    own_positives, pending, rendered = 0, 0, 0
    held_out = resolve_holdout(cfg.holdout_goals, source.goals) if split == "train" else []
    held = (set(held_out), held_pairs(held_out)) if held_out else None
    with ShardSink(out, split, index) as sink:
        for j in range(EPISODE_STRIDE):
            if sink.samples >= nframes or (focus and rendered >= RENDER_BUDGET * nframes):
                break
            episode = index * EPISODE_STRIDE + j
            env_seed = cfg.seed + SPLIT_SEED_OFFSET[split] + episode
            before = sink.samples
            kept, n = _episode_frames(cfg, source, env_seed, episode, focus, nframes - sink.samples, held)
            rendered += n
            for key, frame, meta, positive in kept[:nframes - sink.samples]:
                sink.write(key, frame, meta)
                own_positives += positive
            pending += sink.samples - before
            if _QUEUE is not None and (pending >= 50 or sink.samples >= nframes):
                _QUEUE.put((pending, own_positives))
                pending, own_positives = 0, 0
        else:
            quality_issue(f"{split} shard {index}: {EPISODE_STRIDE} episodes gave only {sink.samples} frames "
                          f"(negative_keep={cfg.negative_keep} too low?)", cfg.strict)
    return dict(sink.stats, split=split, index=index, fingerprint=fingerprint(cfg), frames_asked=nframes,
                focus=list(focus) if focus else None)


class _BarFeed:
    """In-process stand-in for the workers' progress queue: updates the bar directly."""

    def __init__(self, bar):
        self.bar = bar

    def put(self, item) -> None:
        frames, positives = item
        self.bar.positives += positives
        self.bar.set_postfix(positives=self.bar.positives, refresh=False)
        self.bar.update(frames)


# ---------------------------------------------------------------- the whole dataset


def plan(cfg: CollectConfig) -> list[tuple[str, int, int]]:
    """(split, shard index, frames) for every shard of the dataset."""
    tasks = []
    for split in SPLITS:
        total = getattr(cfg.frames, split)
        for i in range(math.ceil(total / cfg.shard_size)):
            tasks.append((split, i, min(cfg.shard_size, total - i * cfg.shard_size)))
    return tasks


def _finished(out: Path, split: str, index: int, fp: str, strict: bool, nframes: int | None = None,
              focus: tuple[str, ...] | None = None) -> dict | None:
    """The progress record of a complete shard, or None when the shard must be (re)written."""
    rec_path, tar = out / PROGRESS_DIR / f"{split}-{index:06d}.json", out / shard_name(split, index)
    if not rec_path.is_file() or not tar.is_file():
        return None
    try:
        rec = read_json(rec_path, "progress record")
    except VlmrError:
        return None
    if rec.get("fingerprint") != fp:
        raise VlmrError(f"{out} was collected with a different config ({rec_path.name} differs); "
                        "collect into a new out_dir, or pass overwrite=true to replace it")
    if focus and (tuple(rec.get("focus") or ()) != focus or rec.get("frames_asked") != nframes):
        return None  # a top-up shard aimed at other goals (the top-up settings changed): rewrite it
    if rec.get("sha256") != sha256_file(tar):
        quality_issue(f"shard {tar} does not match its progress record (corrupt or modified); rewriting it", strict)
        return None
    return rec


def _remove_stale_shards(out: Path, done: dict) -> None:
    """Top-up shards of an earlier run with other top-up settings that this run no longer uses."""
    for rec_path in (out / PROGRESS_DIR).glob("*.json"):
        split, _, index = rec_path.stem.rpartition("-")
        if (split, int(index)) not in done:
            (out / shard_name(split, int(index))).unlink(missing_ok=True)
            rec_path.unlink()


def _record_fingerprint(path: Path) -> str | None:
    try:
        return read_json(path, "progress record").get("fingerprint")
    except (VlmrError, AttributeError):
        return None


def _prepare_out_dir(cfg: CollectConfig, resume: bool) -> Path:
    out = check_writable(cfg.out_dir, "dataset folder")  # before any episode is run
    ours = [*out.glob("*.tar"), out / MANIFEST_FILE, out / PROGRESS_DIR, *out.glob(".*.tar.tmp")]
    exists = [p for p in ours if p.exists()]
    if exists and cfg.overwrite and resume:  # resume what this config wrote, replace anything else
        fp = fingerprint(cfg)
        records = list((out / PROGRESS_DIR).glob("*.json"))
        same = bool(records) and all(_record_fingerprint(r) == fp for r in records)
        resume = same
    if exists and cfg.overwrite and not resume:
        for p in exists:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    elif exists and not resume:
        state = "complete" if (out / MANIFEST_FILE).exists() else "incomplete (no manifest.json)"
        raise VlmrError(f"dataset {out} already exists and is {state}; pass --resume to continue it or "
                        "overwrite=true to replace it")
    for tmp in out.glob(".*.tar.tmp"):  # shards a killed run left half-written
        tmp.unlink()
    return out


def _run_tasks(cfg: CollectConfig, todo, workers: int, bar) -> list[dict]:
    cfg_dict = config_to_dict(cfg)
    if workers <= 1:
        _init_worker(_BarFeed(bar))
        try:
            return [collect_shard(cfg_dict, *task) for task in todo]
        finally:
            _init_worker(None)
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")  # no forked copies of the parent's threads (tqdm, torch)
    q, feed = ctx.Queue(), _BarFeed(bar)
    with ctx.Pool(workers, initializer=_init_worker, initargs=(q,)) as pool:
        pending = [pool.apply_async(collect_shard, (cfg_dict, *t)) for t in todo]
        while True:
            try:
                feed.put(q.get(timeout=0.2))
            except queue_mod.Empty:
                if all(r.ready() for r in pending):
                    break
        return [r.get() for r in pending]


def _set_aside_manifest(out: Path) -> dict | None:
    """The manifest this collection replaces, kept in the progress folder (not a *.json record there) until the
    new one is written, so that a run interrupted in between still writes it back; then manifest.json goes."""
    aside = out / PROGRESS_DIR / PREVIOUS_MANIFEST
    previous = None
    for path in (out / MANIFEST_FILE, aside):
        try:
            previous = json.loads(path.read_text())
            break
        except (OSError, ValueError):  # none, or unreadable: written anew
            continue
    if previous is not None:
        atomic_write_json(aside, previous)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # until the end, the folder does not look complete
    return previous


def collect(cfg: CollectConfig, resume: bool = False, workers: int = 1,
            progress: bool = True, stop_after: int | None = None) -> Path:
    """Collect the dataset described by `cfg`; returns its folder. `stop_after` (tests) stops after N shards."""
    from tqdm import tqdm

    from vlmr.core.provenance import run_info

    validate(cfg)
    source = make_source(cfg)  # fail fast on a bad env id or goal set, before touching the folder
    holdout = resolve_holdout(cfg.holdout_goals, source.goals)
    out = _prepare_out_dir(cfg, resume)
    fp = fingerprint(cfg)
    tasks = plan(cfg)
    done = {(s, i): rec for s, i, _ in tasks if (rec := _finished(out, s, i, fp, cfg.strict))}
    todo = [t for t in tasks if (t[0], t[1]) not in done]
    if stop_after is not None:
        todo = todo[:stop_after]
    previous = _set_aside_manifest(out)
    t0 = time.perf_counter()
    bar = tqdm(total=sum(n for *_, n in todo), unit="frame", desc=f"collect {cfg.name}", disable=not progress,
               smoothing=0.1, dynamic_ncols=True)
    bar.positives = 0
    with bar:
        for rec in _run_tasks(cfg, todo, max(1, workers), bar):
            done[(rec["split"], rec["index"])] = rec
        if stop_after is not None and len(done) < len(tasks):
            return out
        planned = {s: sum(1 for t in tasks if t[0] == s) for s in SPLITS
                   if cfg.coverage_splits is None or s in cfg.coverage_splits}
        while topups := topup_tasks(cfg, done, planned, source.goals, holdout):  # rounds until covered or out of budget
            todo = []
            for split, index, nframes, focus in topups:
                rec = _finished(out, split, index, fp, cfg.strict, nframes, focus)
                if rec:
                    done[(split, index)] = rec
                else:
                    todo.append((split, index, nframes, focus))
            bar.total += sum(t[2] for t in todo)
            for rec in _run_tasks(cfg, todo, max(1, workers), bar):
                done[(rec["split"], rec["index"])] = rec
    seconds = time.perf_counter() - t0
    _remove_stale_shards(out, done)
    dropped = coverage_notes(done, planned, source.goals, cfg.min_positives_per_split, cfg.frames,
                             holdout)
    if len(dropped) == len(source.goals):
        raise VlmrError(f"{cfg.name}: no goal reaches min_positives_per_split={cfg.min_positives_per_split} in "
                        f"every split, even after top-ups of up to max_topup_ratio={cfg.max_topup_ratio} times each "
                        "split; collect more frames, raise max_topup_ratio or lower min_positives_per_split")
    if dropped:
        quality_issue(f"{cfg.name}: {len(dropped)} goal(s) dropped from the goal set, short of positives after "
                      f"top-ups: " + "; ".join(f"{g!r}: {why}" for g, why in dropped.items()), cfg.strict)
    splits = {s: [rec for (s2, _), rec in sorted(done.items()) if s2 == s] for s in SPLITS}
    cfg_dict = config_to_dict(cfg)
    goals = [g for g in source.goals if g not in dropped]
    manifest = write_manifest(out, name=cfg.name, source=cfg.source, goals=goals, image_size=cfg.image_size,
                              view=source.view, splits=splits, config=cfg_dict, run=run_info(cfg_dict, cfg.seed),
                              extra={"fingerprint": fp, "dropped_goals": dropped,
                                     "holdout_goals": [g for g in holdout if g in goals]}, previous=previous)
    (out / PROGRESS_DIR / PREVIOUS_MANIFEST).unlink(missing_ok=True)
    if progress:
        print(report(read_json(manifest), bar.n, seconds, workers))  # bar.n: the frames written by this run
    return out


def report(manifest: dict, new_frames: int, seconds: float, workers: int) -> str:
    """Positive rate per goal on the train split, and a one-line summary."""
    train = manifest["splits"]["train"]
    n = max(1, train["samples"])
    rates = sorted(((train["positives"].get(g, 0) / n, g) for g in manifest["goals"]), reverse=True)
    lines = [f"positive rate per goal (train, {train['samples']} frames):"]
    lines += [f"  {r:6.1%}  {g}" for r, g in rates]
    counts = " / ".join(f"{s} {e['samples']}" for s, e in manifest["splits"].items())
    fps = new_frames / seconds if seconds > 0 else float("nan")
    lines.append(f"collected {manifest['name']}: {counts} frames; {new_frames} new in {seconds:.1f} s "
                 f"({fps:.0f} frames/s, {workers} worker(s)); manifest: {manifest['source']} {len(manifest['goals'])} goals")
    return "\n".join(lines)


def config_for_source(source: str) -> Path:
    """The shipped data config named `source` (data/shapes.yaml for --source shapes)."""
    shipped = shipped_configs()
    if f"data/{source}" not in shipped:
        known = sorted(k.removeprefix("data/") for k in shipped if k.startswith("data/"))
        raise VlmrError(f"no shipped data config for --source {source!r}; known: {', '.join(known)}")
    return shipped[f"data/{source}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmr collect", description="Collect frame-caption data into webdataset shards.")
    parser.add_argument("config", nargs="?", help="YAML config (configs/data/*.yaml); optional with --source")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (frames.train=2000 out_dir=data/x)")
    parser.add_argument("--source", help="shortcut for configs/data/SOURCE.yaml (shapes, babyai_goto, ...)")
    parser.add_argument("--resume", action="store_true", help="continue after the last complete shard")
    parser.add_argument("--workers", type=int, default=1, help="parallel collection processes")
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or report")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    overrides = list(args.overrides)
    if args.source:
        if args.config is not None:
            overrides.insert(0, args.config)  # with --source every positional is an override
        path = config_for_source(args.source)
    elif args.config is None:
        parser.error("give a CONFIG file or --source NAME")
    else:
        path = args.config
        if "=" in args.config and not Path(path).exists():
            raise VlmrError(f"first argument {args.config!r} looks like an override; give the config file first")
    if args.workers < 1:
        raise VlmrError(f"--workers {args.workers}: need at least 1")
    cfg = load_config(CollectConfig, path, overrides + (["strict=true"] if args.strict else []), kind="data")
    collect(cfg, resume=args.resume, workers=args.workers, progress=not args.quiet)
    return 0


__all__ = ["CollectConfig", "SplitFrames", "collect", "collect_shard", "main", "make_source", "sample_meta"]
