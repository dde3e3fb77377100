"""Score a labelled split with a reward model, in batches, and cache the similarity matrix.

    scores = score_split(rm, "data/shapes", "val", cache_dir="runs/demo/reward_model/calibration")
    scores.sims      # float32 (N, C): cosine similarity of every frame to every candidate (goals first)
    scores.labels    # int8 (N, G), aligned with scores.goals;  scores.own_goal: int64 (N,), -1 if no mission

A model with goals added at load (rm.new_goals) gets their columns after the saved candidates, and
their scores are cached in a file of their own. scores.goals is the saved goal set, then the new goals
the data labels (goals held out of fine-tuning; a reworded sentence has no label), in the order they
were added: add labelled goals first so their label columns line up with their score columns.

P(g|o) at any temperature is a cheap function of `sims` (reward_math.all_goal_log_probs),
so temperature fitting never re-runs the model. The cache file
`scores-{split}-{data digest[:12]}.npz` holds the reward model's identity, the
manifest's sha256 and the sha256 of every shard that was read; it is used only
when all of them (and the frame limit) match, and rewritten otherwise. Shards
are hashed before the cache is looked up, so a shard damaged since the cache was
written is skipped (and counted) and the cache is not trusted. `scores.meta`
records `skipped` (samples left out) and the problems met while scoring, which a
cache hit repeats as warnings (errors under strict).

Several datasets fitted together (calibrate's `extra_data`) are scored and cached one by one, each
keyed on its own shards, and joined with `concat_scores`.

Frames are streamed shard by shard (not loaded whole like vlmr.core.dataset.load_split_arrays),
so a split of any size fits in memory.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path

import numpy as np

from vlmr.core.dataset import (
    MANIFEST_FILE,
    SkipCounter,
    check_goal_sets,
    iter_split,
    read_manifest,
    split_shards,
)
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_bytes, sha256_file, sha256_text
from vlmr.core.integrity import shard_sha256, verified_shards
from vlmr.core.quality import quality_issue

CACHE_VERSION = 2  # 2: keyed on the hashes of the shards read, records skipped samples


@dataclasses.dataclass
class Scores:
    sims: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int8 (N, G)
    own_goal: np.ndarray  # int64 (N,)
    keys: list[str]
    goals: list[str]
    meta: dict  # model_id, manifest_sha256, shards {name: sha256 read}, split, limit, candidates, skipped, problems
    cached: bool = False  # True when read from the cache file


def _cache_path(cache_dir: Path, split: str, data_digest: str) -> Path:
    return Path(cache_dir) / f"scores-{split}-{data_digest[:12]}.npz"


def _read_cache(path: Path, meta: dict) -> Scores | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["meta"]))
            if {k: stored.get(k) for k in meta} != meta:
                return None
            return Scores(z["sims"], z["labels"], z["own_goal"], [str(k) for k in z["keys"]], list(meta["goals"]),
                          stored, cached=True)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:  # damaged cache: score again
        warnings.warn(f"ignoring unreadable score cache {path}: {e}", stacklevel=3)
        return None


def _write_cache(path: Path, scores: Scores) -> None:
    buf = io.BytesIO()
    np.savez(buf, sims=scores.sims, labels=scores.labels, own_goal=scores.own_goal,
             keys=np.asarray(scores.keys, dtype=str), meta=np.asarray(json.dumps(scores.meta, sort_keys=True)))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:  # a read-only model dir still evaluates; it only loses the cache
        warnings.warn(f"could not write score cache {path}: {e}", stacklevel=3)


def score_split(rm, data_dir: str | Path, split: str, batch_size: int = 256, cache_dir: str | Path | None = None,
                limit: int | None = None, progress: bool = True, model_name: str = "the reward model",
                strict: bool = False) -> Scores:
    """Similarities, labels and own-goal ids of every sample of `split`, from the cache when it is valid."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    goals = list(rm.spec.goals)  # the saved goal set: goals added at load have no labels in the data
    check_goal_sets(list(manifest["goals"]), goals, data_dir, model_name, manifest.get("holdout_goals"))
    manifest_sha = sha256_file(data_dir / MANIFEST_FILE)
    counter = SkipCounter(strict)
    split_shards(data_dir, split, manifest)
    # the data's identity is what will be read: every intact shard by hash (damaged ones are reported here)
    shards = {p.name: shard_sha256(p) for p in verified_shards(data_dir, split, manifest, counter)}
    new_goals = list(rm.new_goals)
    num_candidates = len(goals) + len(rm.spec.negatives) + len(new_goals)
    # new goals the data labels too (goals held out of fine-tuning) get label columns after the saved ones
    goals = goals + [g for g in new_goals if g in set(manifest["goals"])]
    meta = {"version": CACHE_VERSION, "model_id": rm.model_id, "manifest_sha256": manifest_sha, "shards": shards,
            "split": split, "limit": limit, "goals": goals, "candidates": num_candidates}
    digest = sha256_text(f"{manifest_sha} {sorted(shards.items())}")
    if new_goals:  # another file: scores with and without them must not keep replacing each other
        meta["new_goals"] = new_goals
        digest = sha256_text(f"{digest} {new_goals}")
    path = _cache_path(Path(cache_dir), split, digest) if cache_dir is not None else None
    if path is not None and (hit := _read_cache(path, meta)) is not None:
        for problem in hit.meta.get("problems", []):  # met while the cached scores were made: say so again
            quality_issue(f"{problem} (when these scores were cached in {path})", strict)
        return hit
    shard_skips = len(counter.messages)

    from tqdm.auto import tqdm

    index = {g: i for i, g in enumerate(goals)}
    total = manifest["splits"].get(split, {}).get("samples")
    sims, labels, own, keys, batch = [], [], [], [], []

    def flush():
        if batch:
            sims.append(rm.similarities(np.stack(batch)).float().cpu().numpy())
            batch.clear()

    bar = tqdm(total=min(total, limit) if total and limit else (limit or total), desc=f"scoring {split}",
               unit="frame", disable=not progress, leave=False)
    for sample in iter_split(data_dir, split, counter=counter):
        meta_s = sample["meta"]
        if not meta_s.get("labels"):
            raise VlmrError(f"dataset {data_dir} split {split!r}: sample {sample['key']} has no labels; calibration "
                            "and evaluation need labelled data (collect it with ground-truth labellers)")
        if batch and sample["frame"].shape != batch[0].shape:
            flush()
        batch.append(sample["frame"])
        labels.append([int(meta_s["labels"].get(g, 0)) for g in goals])
        own.append(index.get(meta_s.get("mission"), -1))
        keys.append(sample["key"])
        bar.update(1)
        if len(batch) >= batch_size:
            flush()
        if limit and len(keys) >= limit:
            break
    flush()
    bar.close()
    if not keys:
        raise VlmrError(f"dataset {data_dir} split {split!r} has no readable samples")
    label_arr = np.asarray(labels, dtype=np.int64)
    if not np.isin(label_arr, (0, 1)).all():
        raise VlmrError(f"dataset {data_dir} split {split!r}: labels must be 0 or 1, found {np.unique(label_arr).tolist()}")
    meta["skipped"] = counter.skipped
    meta["problems"] = counter.messages[shard_skips:]  # sample-level ones; shard-level ones are in the cache key
    scores = Scores(np.concatenate(sims).astype(np.float32), label_arr.astype(np.int8), np.asarray(own, dtype=np.int64),
                    keys, goals, meta)
    if path is not None:
        _write_cache(path, scores)
    return scores


def saved_goal_scores(scores: Scores, num_saved: int, num_goals: int) -> Scores:
    """The saved goals' part of scores made with goals added at load: the saved candidates' columns and the
    saved goals' labels; a frame whose mission is an added goal has no own goal among them (-1)."""
    own = np.where(scores.own_goal >= num_goals, -1, scores.own_goal)
    return dataclasses.replace(scores, sims=scores.sims[:, :num_saved], labels=scores.labels[:, :num_goals],
                               own_goal=own, goals=list(scores.goals[:num_goals]))


def concat_scores(parts: list[Scores]) -> Scores:
    """Scores of several datasets (same model and goals) as one: rows in order; meta sums the skips, keeps the
    first dataset's manifest sha256 and lists every part's meta under "parts"."""
    if len(parts) == 1:
        return parts[0]
    meta = {**parts[0].meta, "skipped": sum(int(p.meta.get("skipped", 0)) for p in parts),
            "problems": [m for p in parts for m in p.meta.get("problems", [])], "parts": [p.meta for p in parts]}
    return Scores(np.concatenate([p.sims for p in parts]), np.concatenate([p.labels for p in parts]),
                  np.concatenate([p.own_goal for p in parts]), [k for p in parts for k in p.keys], list(parts[0].goals),
                  meta, cached=all(p.cached for p in parts))
