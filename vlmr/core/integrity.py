"""Shard and frame integrity: what every dataset reader checks before a frame reaches a model.

    from vlmr.core.integrity import frame_sha256, shard_sha256, verified_shards
    meta["frame_sha256"] = frame_sha256(frame)             # ShardSink.write stores it for every sample
    good = verified_shards(data_dir, "val", manifest, counter)   # shards whose sha256 matches the manifest
    verdicts = verify_dataset("data/babyai_goto")         # per-shard verdicts: what `vlmr verify DATASET` prints

Two checks (docs/DESIGN.md, "Integrity"):
- **shard**: the file's sha256 against the manifest, before the shard is streamed. A mismatch (a flipped
  byte, a truncated file, an edited manifest) skips the whole shard and counts its samples, or is an error
  under strict mode. A hash is computed once per process and file state (the memo is keyed on size, mtime,
  ctime and inode, so any rewrite of the file is hashed again).
- **frame**: the sha256 of the decoded pixels (shape included) against `meta["frame_sha256"]`, right after
  the PNG is decoded: a PNG that still decodes but to other pixels than were collected is caught even where
  the shard's hash was re-signed, and a lone .tar without its manifest still has its frames checked.
Datasets written before frame hashes existed (shard entries without `frame_hashes`) still load, with one
warning per dataset; their shard hashes are still checked.

Tests: `.venv/bin/python -m pytest tests/test_integrity.py -q`
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from vlmr.core.files import sha256_file

_CHECKS = True  # off only inside `unchecked()`, which benchmarks use to measure what the checks cost
_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> sha256, for this process
_LEGACY_WARNED: set[str] = set()  # datasets whose missing frame hashes were already reported here


class LegacyDatasetWarning(UserWarning):
    """A dataset whose shards predate frame hashes: readable, shard hashes checked, frames not one by one."""


def frame_sha256(frame: np.ndarray) -> str:
    """sha256 of a frame's uint8 pixels, its shape included (so a reshaped frame does not match)."""
    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
    h = hashlib.sha256("x".join(map(str, pixels.shape)).encode() + b":")
    h.update(pixels.data)
    return h.hexdigest()


def check_frame(frame: np.ndarray, meta: dict, key: str, url: str | None, required: bool) -> None:
    """Raise ValueError when the frame's pixels are not the collected ones (or the hash that says so is gone)."""
    if not _CHECKS:
        return
    want = meta.get("frame_sha256")
    if want is None:
        if required:
            raise ValueError(f"sample {key} of {url}: meta.json lacks frame_sha256 although its shard was written "
                             "with frame hashes (edited meta.json)")
        return
    if frame_sha256(frame) != want:
        raise ValueError(f"sample {key} of {url}: the frame decodes to other pixels than were collected "
                         "(frame_sha256 differs: a damaged PNG)")


def shard_sha256(path: str | Path) -> str | None:
    """The file's sha256, hashed once per process and file state; None when the file is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def forget_hashes() -> None:
    """Drop the per-process hash memo (benchmarks, to time the first read again)."""
    _HASHES.clear()


@contextlib.contextmanager
def unchecked():
    """Read without shard or frame checks: only for measuring what they cost (`vlmr bench --only integrity`)."""
    global _CHECKS
    old, _CHECKS = _CHECKS, False
    try:
        yield
    finally:
        _CHECKS = old


def checks_enabled() -> bool:
    return _CHECKS


def shard_problem(path: Path, entry: dict) -> str | None:
    """Why a shard listed in the manifest must not be read, or None when its sha256 matches."""
    got = shard_sha256(path)
    if got is None:
        return f"shard {path} is missing"
    want = str(entry.get("sha256"))
    if got != want:
        return (f"shard {path}: sha256 {got[:12]}.. differs from the manifest's {want[:12]}.. (corrupt, truncated or "
                "modified after collection)")
    return None


def verified_shards(data_dir: str | Path, split: str, manifest: dict, counter) -> list[Path]:
    """The shards of `split` whose sha256 matches the manifest; the others are reported to `counter`
    (a warning and their samples counted as skipped, or an error under strict mode)."""
    data_dir = Path(data_dir)
    entries = manifest["splits"][split]["shards"]
    if not _CHECKS:
        return [data_dir / e["name"] for e in entries]
    warn_legacy(data_dir, manifest)
    good = []
    for entry in entries:
        path = data_dir / entry["name"]
        problem = shard_problem(path, entry)
        if problem is None:
            good.append(path)
        else:
            n = int(entry.get("samples", 0))
            counter.skip(f"shard {path} {shard_sha256(path)}",
                         f"{problem}; skipping its {n} samples. `vlmr verify {data_dir}` checks every shard; "
                         "`vlmr collect CONFIG --resume` rewrites damaged ones", samples=n)
    return good


def hashed_urls(data_dir: str | Path, split: str, manifest: dict) -> frozenset[str]:
    """Shards of `split` written with per-frame hashes: their samples must carry one."""
    return frozenset(str(Path(data_dir) / e["name"]) for e in manifest["splits"][split]["shards"]
                     if e.get("frame_hashes"))


def legacy_shards(manifest: dict) -> list[str]:
    return [e["name"] for s in manifest["splits"].values() for e in s.get("shards", []) if not e.get("frame_hashes")]


def warn_legacy(data_dir: Path, manifest: dict) -> None:
    """One warning per dataset and process when shards predate frame hashes. Not a quality warning (strict
    mode does not stop on it): the shard hashes still cover every byte, only a re-signed shard goes unseen."""
    old = legacy_shards(manifest)
    if old and str(data_dir) not in _LEGACY_WARNED:
        _LEGACY_WARNED.add(str(data_dir))
        warnings.warn(f"dataset {data_dir}: {len(old)} shard(s) ({old[0]}, ..) were written before vlmr stored "
                      "per-frame hashes; their shard sha256 is checked but frames are not checked one by one. "
                      "Recollect (`vlmr collect CONFIG overwrite=true`) to add them", LegacyDatasetWarning, stacklevel=3)
